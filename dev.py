#!/usr/bin/env python3
"""One-command entry points for a machine that has only Python 3.11+.

    python3 dev.py start      # install what is missing, then run the stack and the Dagster UI
    python3 dev.py stop       # stop a running stack and the embedded PostgreSQL
    python3 dev.py test       # install what is missing, then run the whole test suite
    python3 dev.py lint       # ruff
    python3 dev.py shell CMD  # run CMD inside the project's virtualenv

It uses only the standard library: it creates ``.venv`` next to this file, installs the project
with its ``dev`` extra into it (again whenever ``pyproject.toml`` changes), and runs the command there.
"""

from __future__ import annotations

import contextlib
import hashlib
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
        return run([str(PY), "-m", "ruff", "check", ".", *rest])
    if command == "shell":
        ensure_venv()
        return run(rest or [str(PY)])
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
