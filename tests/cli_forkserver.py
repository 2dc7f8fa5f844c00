"""A warm runner for many short CLI runs in tests (e.g. the bad-input table).

`python tests/cli_forkserver.py` imports train.py, eval_hub.py, compare.py and ladder.py once, then
serves requests: for each it forks a child that changes to the request's folder, sets its argv and
environment, points stdout/stderr at files and runs the script's `main` through `run_cli`,
exactly as `python <script>` would after its imports. Each run is thus its own process with a
real exit status and real stdout/stderr, while the ~2-3 s of imports are paid once. An uncaught
exception prints its traceback and exits 1, like the interpreter.

Protocol: one JSON request per line on stdin {"script", "argv", "cwd", "env", "timeout"}, one JSON
reply per line on stdout {"returncode", "stdout", "stderr"}. `ForkServer` is the client.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("train.py", "eval_hub.py", "compare.py", "ladder.py")


def _load_main(script: str) -> Callable:
    spec = importlib.util.spec_from_file_location(f"_cli_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (ladder.py's) look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.main


def _child(req: dict[str, Any], main: Callable, out: str, err: str) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.update(req.get("env") or {})
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        from unified.cli import run_cli

        sys.argv = [req["script"], *req["argv"]]
        run_cli(main, list(req["argv"]))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # like the interpreter: traceback on stderr, status 1
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    """Answer requests from stdin until it closes."""
    mains = {script: _load_main(script) for script in SCRIPTS}
    for line in sys.stdin:
        req = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(req, mains[req["script"]], out, err)
            deadline = time.time() + float(req.get("timeout", 300))
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    rc = os.waitstatus_to_exitcode(status)
                    break
                if time.time() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    rc = -signal.SIGKILL
                    break
                time.sleep(0.01)
            reply = {"returncode": rc, "stdout": Path(out).read_text(errors="replace"),
                     "stderr": Path(err).read_text(errors="replace")}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class ForkServer:
    """Client: start the server (offline, single-threaded, like `helpers.run_cli`) and run
    CLI invocations through it; `run` returns a `subprocess.CompletedProcess`."""

    def __init__(self, env: dict[str, str] | None = None):
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                    "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=full_env, text=True, cwd=ROOT)

    def run(self, script: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        req = {"script": script, "argv": list(args), "cwd": str(cwd), "env": env or {}, "timeout": timeout}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"cli_forkserver died (exit {self.proc.wait()})")
        reply = json.loads(line)
        return subprocess.CompletedProcess([script, *args], reply["returncode"], reply["stdout"], reply["stderr"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    serve()
