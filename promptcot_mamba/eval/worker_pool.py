"""A small process pool with a hard per-job time limit, for math verification.

math-verify (and sympy under it) can hang on adversarial expressions; its own timeouts use
`signal.alarm`, which only works in a main thread (Math-Verify issues #11, #50, #55). We call it with
`parsing_timeout=None, timeout_seconds=None` inside worker processes and enforce the limit from the
parent: a job past its deadline gets its worker SIGKILLed and replaced, and the job comes back as
`TimedOut`. Workers are fresh interpreters (no fork of a parent holding threads or torch) and cap their
address space.
"""

from __future__ import annotations

import atexit
import importlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any


@dataclass(frozen=True)
class TimedOut:
    seconds: float


@dataclass(frozen=True)
class Failed:
    error: str


def _worker_main(conn, memory_bytes: int | None, preload: Sequence[str] = ()) -> None:  # runs in the child
    import logging

    # math-verify warns on every call that its own (signal) timeouts are off: that is intended here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if memory_bytes:
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        except (ValueError, OSError):
            pass
    for mod in preload:  # heavy imports before "ready", so they never count against a job's time limit
        try:
            importlib.import_module(mod)
        except Exception:
            pass
    conn.send("ready")
    cache: dict[str, Callable] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job, target, args = msg
        try:
            fn = cache.get(target)
            if fn is None:
                mod, name = target.rsplit(":", 1)
                fn = cache[target] = getattr(importlib.import_module(mod), name)
            out = fn(*args)
        except BaseException as err:  # report, never die on a bad input
            out = Failed(f"{type(err).__name__}: {err}"[:500])
        try:
            conn.send((job, out))
        except Exception as err:  # unpicklable result
            conn.send((job, Failed(f"result not sendable: {err}")))


class _Worker:
    """One worker: a plain `python worker_pool.py FD` subprocess talking over a socketpair. Not
    multiprocessing's spawn/forkserver: those re-import the caller's `__main__`, which breaks
    (recursively) for any unguarded script that grades math."""

    def __init__(self, memory_bytes, preload: Sequence[str] = ()):
        import socket
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the caller's import path
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno()), str(memory_bytes or 0), *preload],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.job: int | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.ready = False

    def wait_ready(self, timeout_s: float = 300.0) -> bool:
        """Block until the interpreter has started and preloaded (the package import alone takes seconds)."""
        if not self.ready:
            try:
                self.ready = self.conn.poll(timeout_s) and self.conn.recv() == "ready"
            except (EOFError, OSError):
                self.ready = False
        return self.ready

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:
            pass
        finally:
            self.conn.close()


class TimeoutPool:
    """`pool.map("module:function", [args, ...], timeout_s)` -> results in order (TimedOut/Failed on trouble)."""

    def __init__(self, workers: int | None = None, *, memory_bytes: int | None = 4 << 30,
                 preload: Sequence[str] = ()):
        self.n = max(1, workers or os.cpu_count() or 1)
        self.memory_bytes = memory_bytes
        self._workers: list[_Worker] = []
        self.preload = tuple(preload)
        _LIVE.append(self)

    def _ensure(self) -> None:
        while len(self._workers) < self.n:
            self._workers.append(_Worker(self.memory_bytes, self.preload))

    def map(self, target: str, arglists: Sequence[tuple], timeout_s: float,
            progress: Callable[[int], Any] | None = None) -> list[Any]:
        self._ensure()
        results: list[Any] = [None] * len(arglists)
        todo = deque(range(len(arglists)))
        idle = list(self._workers)
        busy: dict[Any, _Worker] = {}
        while todo or busy:
            while todo and idle:
                w = idle.pop()
                j = todo.popleft()
                if not w.wait_ready():
                    results[j] = Failed("grader worker failed to start")
                    if progress:
                        progress(1)
                    idle.append(self._replace(w))
                    continue
                w.job, w.started = j, time.monotonic()
                w.deadline = w.started + timeout_s
                try:
                    w.conn.send((j, target, tuple(arglists[j])))
                except (BrokenPipeError, OSError):
                    self._replace(w)
                    todo.appendleft(j)
                    idle.append(self._workers[-1])
                    continue
                busy[w.conn] = w
            if not busy:
                continue
            now = time.monotonic()
            ready = wait(list(busy), timeout=max(0.0, min(w.deadline for w in busy.values()) - now))
            for conn in ready:
                w = busy.pop(conn)
                try:
                    j, out = conn.recv()
                except (EOFError, OSError):  # the worker died (e.g. out of memory)
                    j, out = w.job, Failed("grader worker died")
                    w = self._replace(w)
                results[j] = out
                if progress:
                    progress(1)
                idle.append(w)
            now = time.monotonic()
            for conn, w in list(busy.items()):
                if now >= w.deadline:
                    busy.pop(conn)
                    results[w.job] = TimedOut(now - w.started)
                    if progress:
                        progress(1)
                    idle.append(self._replace(w))
        return results

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        nw = _Worker(self.memory_bytes, self.preload)
        self._workers[self._workers.index(w)] = nw
        return nw

    def warm(self, target: str, args: tuple) -> None:
        """Run one cheap job on every worker so imports are paid before timed work."""
        self._ensure()
        self.map(target, [args] * self.n, timeout_s=120.0)

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except Exception:
                pass
            w.kill()
        self._workers = []


_LIVE: list[TimeoutPool] = []  # every pool made here: their workers are killed at interpreter exit


@atexit.register
def _close_all() -> None:
    for p in _LIVE:
        p.close()


if __name__ == "__main__":
    import sys
    from multiprocessing.connection import Connection

    sys.path[0:1] = []  # do not shadow stdlib modules with files next to this script
    # Run the package's copy of this module, not this `__main__` one, so that a `Failed` unpickles in the
    # parent as promptcot_mamba.eval.worker_pool.Failed. Importing the package costs nothing heavy: its
    # __init__ is lazy (torch comes in only with a model symbol) and the graders need only text/ and eval/.
    from promptcot_mamba.eval.worker_pool import _worker_main as main

    main(Connection(int(sys.argv[1])), int(sys.argv[2]) or None, sys.argv[3:])
