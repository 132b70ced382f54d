#!/usr/bin/env python3
"""One-command entry points for a machine that has only Python 3.11+.

    python3 dev.py start      # install what is missing, then run the stack and the Dagster UI
    python3 dev.py test       # install what is missing, then run the whole test suite
    python3 dev.py lint       # ruff
    python3 dev.py shell CMD  # run CMD inside the project's virtualenv

It uses only the standard library: it creates ``.venv`` next to this file, installs the project
with its ``dev`` extra into it (again whenever ``pyproject.toml`` changes), and runs the command there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-pyproject-sha256"


def ensure_venv(extras: str = "dev,bench") -> None:
    """``bench`` (dlt) is installed too: the suite checks that the benchmark's dlt phase still runs."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py itself may be started by an older python3
        sys.exit(f"rutter-pipeline needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    print("installing rutter-pipeline and its dependencies (first run takes a few minutes)", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[{extras}]"], check=True, cwd=ROOT)
    STAMP.write_text(want)


def run(cmd: list[str]) -> int:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("XDG_RUNTIME_DIR", str(ROOT / ".state" / "run"))
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "test":
        ensure_venv()
        args = rest if any(a.startswith("-n") for a in rest) else ["-n", "2", *rest]
        if not any(a.startswith("--basetemp") for a in args):
            # pytest's default /tmp/pytest-of-<user> keeps only the last three runs: a second run on the
            # same machine would delete this one's embedded PostgreSQL under it.
            args = [f"--basetemp={ROOT / '.state' / 'pytest'}", *args]
        return run([str(PY), "-m", "pytest", *args])
    if command == "start":
        ensure_venv()
        return run([str(BIN / "rutter-pipeline"), "dev", *rest])
    if command == "lint":
        ensure_venv()
        return run([str(PY), "-m", "ruff", "check", ".", *rest])
    if command == "shell":
        ensure_venv()
        return run(rest or [str(PY)])
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
