#!/usr/bin/env python3
"""One-command entry points for a machine that has only Python 3.11+.

    python3 dev.py start      # install what is missing, then run the stack and the Dagster UI
    python3 dev.py stop       # stop a running stack and the embedded PostgreSQL
    python3 dev.py test       # install what is missing, then run the whole test suite
    python3 dev.py lint       # ruff check, ruff format --check, mypy (what CI checks)
    python3 dev.py shell CMD  # run CMD inside the project's virtualenv
    python3 dev.py lock       # remake requirements/dev.lock after a dependency change in pyproject.toml

It uses only the standard library: it creates ``.venv`` next to this file, installs the pinned
dependencies of ``requirements/dev.lock`` (the project's ``dev`` and ``bench`` extras, with hashes)
and then the project itself, editable, again whenever ``pyproject.toml`` or the lock changes, and runs
the command there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-pyproject-sha256"
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "dev.lock"
# ``bench`` (dlt) is locked and installed too: the suite checks that the benchmark's dlt phase still runs.
EXTRAS = ("dev", "bench")
LOCK_TOOL = "uv>=0.13,<0.14"  # only `dev.py lock` needs it; the lock itself is installed by pip
DEPS_LINE = "# dependencies-sha256: "  # the lock's first line: what pyproject.toml declared when it was made


def ensure_python() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py itself may be started by an older python3
        sys.exit(f"rutter-pipeline needs Python 3.11 or newer; this is {sys.version.split()[0]}")


def create_venv() -> None:
    if not PY.exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)


def declared_dependencies() -> str:
    """A digest of the dependency tables the lock is made from (not of the whole pyproject.toml, whose
    tool sections change without making the lock stale)."""
    import tomllib  # after the version check: Python 3.11+

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    declared = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "extras": {extra: project.get("optional-dependencies", {}).get(extra, []) for extra in EXTRAS},
    }
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def ensure_venv() -> None:
    """Install the lock, then the project itself without dependencies (it is editable, so not hashable)."""
    ensure_python()
    lock = LOCK.read_bytes()
    if not lock.decode().startswith(DEPS_LINE + declared_dependencies()):
        sys.exit(
            f"{LOCK.relative_to(ROOT)} does not match the dependencies in pyproject.toml: "
            "run `python3 dev.py lock` and commit the new lock with the change"
        )
    create_venv()
    want = hashlib.sha256(PYPROJECT.read_bytes() + lock).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    print("installing rutter-pipeline and its dependencies (first run takes a few minutes)", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--require-hashes", "-r", str(LOCK)], check=True, cwd=ROOT)
    subprocess.run([*pip, "install", "--no-deps", "-e", str(ROOT)], check=True, cwd=ROOT)
    STAMP.write_text(want)


def make_lock(args: list[str]) -> int:
    """Resolve pyproject.toml's dependencies (and the ``EXTRAS``) into ``LOCK``: exact versions and the
    hashes of every file PyPI has for them, for every platform and Python >= 3.11 (uv's universal
    resolution). Versions already in the lock are kept where they still fit; ``--upgrade`` (passed on
    to uv) moves everything to the newest allowed."""
    ensure_python()
    create_venv()
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", LOCK_TOOL], check=True)
    LOCK.parent.mkdir(exist_ok=True)
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    body = LOCK.with_suffix(".tmp")
    if LOCK.exists():  # uv keeps the versions of the file it writes to where they still fit
        body.write_bytes(LOCK.read_bytes())
    output = ["--output-file", str(body.relative_to(ROOT))]
    universal = ["--universal", "--python-version", "3.11", "--generate-hashes", "--no-header"]
    compile_cmd = [str(BIN / "uv"), "pip", "compile", "--quiet", str(PYPROJECT.relative_to(ROOT)), *extras]
    code = subprocess.call([*compile_cmd, *universal, *output, *args], cwd=ROOT)
    if code == 0:
        header = (
            f"{DEPS_LINE}{declared_dependencies()}\n"
            "# Made by `python3 dev.py lock` from pyproject.toml's dependencies and its extras "
            f"{', '.join(EXTRAS)}; do not edit.\n"
        )
        LOCK.write_text(header + body.read_text())
    body.unlink(missing_ok=True)
    return code


def venv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)  # as `activate` sets it: `dg` checks it is the project's
    env.setdefault("XDG_RUNTIME_DIR", str(ROOT / ".state" / "run"))
    runtime = Path(env["XDG_RUNTIME_DIR"])
    runtime.mkdir(parents=True, exist_ok=True)
    if runtime == ROOT / ".state" / "run":
        runtime.chmod(0o700)  # platformdirs warns on every import otherwise (the spec wants 0700)
    return env


def run(cmd: list[str]) -> int:
    return subprocess.call(cmd, cwd=ROOT, env=venv_env())


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run ``cmd`` in a process group of its own and pass it every stop signal this process gets.

    A signal sent to dev.py alone (a supervisor, an IDE's stop button, ``kill``) would otherwise leave
    the child and its children running; a terminal's Ctrl-C, sent to the whole foreground group, would
    reach every process at once, each printing its own traceback. The child stops its children itself.
    """
    child: subprocess.Popen | None = None
    pending: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if child is None:
            pending.append(signum)
        else:
            with contextlib.suppress(ProcessLookupError):  # it is exiting already
                child.send_signal(signum)

    # Handlers first: the child must not inherit an ignored SIGINT (background jobs of a shell have one).
    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    group = {"process_group": 0} if os.name == "posix" else {}
    child = subprocess.Popen(cmd, cwd=ROOT, env=venv_env(), **group)
    for signum in pending:
        child.send_signal(signum)
    code = child.wait()  # PEP 475: the wait resumes after each forwarded signal
    return 128 - code if code < 0 else code


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
        return run_forwarding_signals([str(BIN / "rutter-pipeline"), "dev", *rest])
    if command == "stop":
        ensure_venv()
        return run([str(BIN / "rutter-pipeline"), "stop", *rest])
    if command == "lint":
        ensure_venv()
        checks = (["ruff", "check", ".", *rest], ["ruff", "format", "--check", "."], ["mypy"])
        codes = [run([str(PY), "-m", *check]) for check in checks]  # every check reports, even after a failure
        return max(codes)
    if command == "lock":
        return make_lock(rest)
    if command == "shell":
        ensure_venv()
        return run(rest or [str(PY)])
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
