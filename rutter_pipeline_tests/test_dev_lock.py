"""``requirements/dev.lock`` is what ``dev.py`` installs, so it must follow pyproject.toml's dependencies.

The lock's first line records a digest of the dependency tables it was made from; ``dev.py`` refuses
to install a lock whose digest no longer matches (``python3 dev.py lock`` remakes it), and changes to
pyproject.toml outside those tables (tool settings) leave the lock valid.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_dev(root: Path) -> ModuleType:
    """dev.py as a module, reading the pyproject.toml and lock next to it."""
    spec = importlib.util.spec_from_file_location(f"dev_{abs(hash(root))}", root / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_project_files(tmp_path: Path) -> Path:
    (tmp_path / "requirements").mkdir()
    for name in ("dev.py", "pyproject.toml", "requirements/dev.lock"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_committed_lock_was_made_from_the_current_dependencies() -> None:
    dev = load_dev(ROOT)
    first_line = dev.LOCK.read_text().splitlines()[0]
    assert first_line == dev.DEPS_LINE + dev.declared_dependencies(), "run `python3 dev.py lock` and commit it"


def test_tool_settings_leave_the_lock_valid_and_a_new_dependency_does_not(tmp_path: Path) -> None:
    root = copy_project_files(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    dev = load_dev(root)
    locked = dev.declared_dependencies()

    pyproject.write_text(text.replace("[tool.ruff]\nline-length = 120", "[tool.ruff]\nline-length = 100"))
    assert pyproject.read_text() != text
    assert dev.declared_dependencies() == locked

    pyproject.write_text(text.replace("dev = [\n", 'dev = [\n    "six>=1.16,<2",\n'))
    assert dev.declared_dependencies() != locked


def test_dev_py_refuses_a_stale_lock_and_installs_nothing(tmp_path: Path) -> None:
    root = copy_project_files(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("dependencies = [\n", 'dependencies = [\n    "six>=1.16,<2",\n'))
    result = subprocess.run(
        [sys.executable, str(root / "dev.py"), "shell", "true"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "python3 dev.py lock" in result.stderr
    assert "installing" not in result.stdout
    assert not (root / ".venv").exists()
