"""Live servers on 127.0.0.1 (free port) for the server tests: the app under uvicorn in a background
thread (`LiveServer`, through serve/app.py's `Server`, so shutdown drains as in `pcm serve`), and `pcm
serve` itself as a process (`ServeProcess`, for signals and the log)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from promptcot_mamba.serve.app import Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} did not come up")


class LiveServer:
    def __init__(self, app, *, port: int | None = None, grace_s: int = 2):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # log_config=None: uvicorn's dictConfig would close the test process's logging handlers; its
        # records then reach the root logger, where pytest's caplog sees them
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                log_config=None, timeout_graceful_shutdown=grace_s)
        self.server = Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_healthy(self.url, 30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ServeProcess:
    """`python -m promptcot_mamba serve --model FOLDER ...` on a free port, its output in `log_path`."""

    def __init__(self, folder: Path, log_path: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "promptcot_mamba", "serve", "--model", str(folder),
                                      "--port", str(self.port), "--threads", "1", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> ServeProcess:
        try:
            wait_healthy(self.url, 90, alive=lambda: self.proc.poll() is None)
        except RuntimeError:
            self.__exit__()
            raise RuntimeError(f"pcm serve did not come up:\n{self.log()}") from None
        return self

    def signal(self, sig: int = signal.SIGTERM) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()
