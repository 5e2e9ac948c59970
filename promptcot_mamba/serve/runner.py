"""The engine on its own thread, fanned out to the server's asyncio handlers.

One thread owns the model and loops `engine.step()`; requests arrive through the engine's
thread-safe inbox and each step's outputs go back to the event loop in one `call_soon_threadsafe`
(not one per token), where they are put on per-request asyncio queues. A consumer that goes away
(client disconnect) calls `abort`, which frees the request's slots at the next step. The engine thread
also times every request for the metrics (serve/metrics.py: time to first token, inter-token latency).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from promptcot_mamba.generate.engine import Engine, SeqOutput
from promptcot_mamba.generate.sampling import SamplingParams
from promptcot_mamba.serve.metrics import RequestTiming


@dataclass
class RunnerStats:
    tokens_per_s: float = 0.0  # generated tokens per second, smoothed over ~1 s windows
    generated_tokens: int = 0


class EngineRunner:
    def __init__(self, engine: Engine, *, idle_sleep_s: float = 0.002):
        self.engine = engine
        self.idle_sleep_s = idle_sleep_s
        self.stats = RunnerStats()
        self.timing = RequestTiming()
        self._queues: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._accepting = True
        self.error: BaseException | None = None

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="pcm-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def accepting(self) -> bool:
        return self._accepting and self.alive

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet released by their consumers."""
        return len(self._queues)

    def stop_accepting(self) -> None:
        self._accepting = False

    def abort_all(self) -> int:
        """Abort every request in flight (each reports finish_reason "abort" at the next step); how many."""
        rids = list(self._queues)
        for rid in rids:
            self.engine.abort(rid)
        self._wake.set()
        return len(rids)

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop taking requests; let in-flight ones finish for up to `grace_s`, abort the rest, then stop
        the engine thread. (The server drains before this runs: serve/app.py `Server`.)"""
        self._accepting = False
        deadline = time.monotonic() + grace_s
        while self._queues and time.monotonic() < deadline and self.alive:
            await asyncio.sleep(0.02)
        if self.abort_all():
            t_end = time.monotonic() + 5.0
            while self._queues and time.monotonic() < t_end and self.alive:
                await asyncio.sleep(0.02)
        self.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
        for q in self._queues.values():  # engine gone: tell whoever still waits
            q.put_nowait(None)

    def stop(self) -> None:
        """Ask the engine thread to end after its current step."""
        self._accepting = False
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------------------------- thread
    def _run(self) -> None:
        window_start, window_tokens = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                if not self.engine.has_work():
                    self.stats.tokens_per_s = 0.0
                    self._wake.wait(self.idle_sleep_s * 50)
                    self._wake.clear()
                    window_start, window_tokens = time.monotonic(), 0
                    continue
                outs = self.engine.step()
                now = time.monotonic()
                n = sum(len(o.token_ids) for o in outs)
                window_tokens += n
                self.stats.generated_tokens += n
                self.timing.observe(outs, now)
                if now - window_start >= 1.0:
                    self.stats.tokens_per_s = window_tokens / (now - window_start)
                    window_start, window_tokens = now, 0
                if outs:
                    self._loop.call_soon_threadsafe(self._dispatch, outs)
        except BaseException as err:  # the engine thread must never die silently
            self.error = err
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._fail_all, repr(err))

    def _dispatch(self, outs: list[SeqOutput]) -> None:
        for o in outs:
            q = self._queues.get(o.request_id)
            if q is not None:
                q.put_nowait(o)

    def _fail_all(self, message: str) -> None:
        for q in self._queues.values():
            q.put_nowait(RuntimeError(f"engine failed: {message}"))

    # ----------------------------------------------------------------------------------- requests
    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str,
               queue: asyncio.Queue) -> None:
        """Queue a request (raises EngineError / QueueFull at once); its outputs go to `queue` (several
        requests may share one). Call `release` when done with it."""
        self._queues[request_id] = queue
        self.timing.submitted(request_id, params.n, time.monotonic())  # before the engine thread can see it
        try:
            self.engine.add_request(prompt_ids, params, request_id)
        except BaseException:
            self._queues.pop(request_id, None)
            self.timing.forget(request_id)
            raise
        self._wake.set()

    def release(self, request_id: str, *, abort: bool) -> None:
        """Stop routing a request's outputs; `abort` also cancels it (frees its slots next step)."""
        self._queues.pop(request_id, None)
        if abort:
            self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)
        self._wake.set()
