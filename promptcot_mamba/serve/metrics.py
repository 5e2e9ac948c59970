"""Prometheus metrics of the server: ours (`pcm_*`) and vLLM's names (`vllm:*`), so that dashboards made
for vLLM show this server too.

A custom collector on a private registry (one per app, so several apps in one process — tests — do
not collide) reads the engine's state at scrape time: queue depth, running sequences, tokens/s, state
memory, prefix cache, request counts by endpoint and status. The per-request latencies (time to first
token, inter-token latency, end to end) are measured on the engine thread (`RequestTiming`), which sees
each request's submission and every step's outputs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from promptcot_mamba.generate.engine import SeqOutput

# vLLM's bucket bounds (vllm/v1/metrics/loggers.py, https://github.com/vllm-project/vllm), with a few
# finer ones below where a small model on a CPU lands (a tiny model's tokens come ~1 ms apart)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
               5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    """Bucket counts and a sum, filled by one thread (the engine's) and read at scrape time without a
    lock: a scrape may see one observation in a bucket before the sum, which Prometheus tolerates."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= its bound
        self.sum += value

    def family(self, name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
        h = HistogramMetricFamily(name, doc, labels=["model_name"])
        total, buckets = 0, []
        for bound, n in zip([*map(str, self.bounds), "+Inf"], list(self.counts)):
            total += n
            buckets.append((bound, total))
        h.add_metric(labels, buckets, sum_value=self.sum)
        return h


class RequestTiming:
    """Latencies per request as vLLM reports them, taken on the engine thread: time to first token (from
    submission to the step that produced a sample's first token), inter-token latency (between a
    sample's consecutive steps with tokens), end-to-end latency (submission to a sample's end), and
    finished samples by reason. `submitted` runs on the event loop, `observe` on the engine thread; they
    share only single dict operations, which are atomic in CPython."""

    def __init__(self) -> None:
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.finished: Counter[str] = Counter()
        self._live: dict[str, tuple[float, dict[int, float], list[int]]] = {}  # rid → (t0, last token at, [left])

    def submitted(self, request_id: str, n: int, now: float) -> None:
        self._live[request_id] = (now, {}, [n])

    def forget(self, request_id: str) -> None:
        self._live.pop(request_id, None)

    def observe(self, outs: Iterable[SeqOutput], now: float) -> None:
        for o in outs:
            live = self._live.get(o.request_id)
            if live is None:
                continue
            t0, last, left = live
            if o.token_ids:
                prev = last.get(o.index)
                if prev is None:
                    self.ttft.observe(now - t0)
                else:
                    self.itl.observe(now - prev)
                last[o.index] = now
            if o.finished:
                self.e2e.observe(now - t0)
                self.finished[o.finish_reason or "stop"] += 1
                left[0] -= 1
                if left[0] <= 0:
                    self._live.pop(o.request_id, None)


class ServerMetrics:
    def __init__(self, runner, model_name: str):  # runner: serve/runner.py's EngineRunner (it imports this module)
        self.runner = runner
        self.model_name = model_name
        self.requests: Counter[tuple[str, str]] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, str(status))] += 1

    def collect(self):
        e, st, timing = self.runner.engine, self.runner.stats, self.runner.timing
        m = [self.model_name]

        def gauge(name, doc, value, label="model"):
            g = GaugeMetricFamily(name, doc, labels=[label])
            g.add_metric(m, float(value))
            return g

        def counter(name, doc, value, label="model"):
            c = CounterMetricFamily(name, doc, labels=[label])
            c.add_metric(m, float(value))
            return c

        yield gauge("pcm_queue_depth", "requests waiting for a slot or still in prefill", e.num_waiting)
        yield gauge("pcm_running_sequences", "sequences decoding now", e.num_running)
        yield gauge("pcm_max_slots", "concurrent sequences the memory budget admits", e.max_slots)
        yield gauge("pcm_tokens_per_second", "generated tokens per second (last ~1 s window)", st.tokens_per_s)
        yield gauge("pcm_state_memory_bytes", "bytes of recurrent state held by the slot pool", e.state_bytes)
        yield gauge("pcm_state_bytes_per_sequence", "state bytes of one sequence (independent of its length)",
                    e.capacity["state_bytes_per_sequence"])
        yield gauge("pcm_prefix_cache_bytes", "bytes of cached prefix states", e.prefix_cache.nbytes)
        yield counter("pcm_generated_tokens", "tokens generated", st.generated_tokens)
        yield counter("pcm_prompt_tokens", "prompt tokens prefilled or taken from the prefix cache",
                      e.stats["prompt_tokens"])
        yield counter("pcm_prefix_cache_hits", "prompts that reused a cached prefix state", e.prefix_cache.hits)
        c = CounterMetricFamily("pcm_requests", "HTTP requests by endpoint and status",
                                labels=["model", "endpoint", "status"])
        for (ep, status), v in sorted(self.requests.items()):
            c.add_metric([self.model_name, ep, status], float(v))
        yield c

        # vLLM's names and labels (https://docs.vllm.ai/en/latest/usage/metrics.html); counted per
        # sequence: a request for n samples counts n
        yield gauge("vllm:num_requests_running", "sequences decoding now", e.num_running, "model_name")
        yield gauge("vllm:num_requests_waiting", "requests waiting for a slot or still in prefill", e.num_waiting,
                    "model_name")
        yield counter("vllm:prompt_tokens", "prompt tokens prefilled (cached prefixes included)",
                      e.stats["prompt_tokens"], "model_name")
        yield counter("vllm:generation_tokens", "tokens generated", st.generated_tokens, "model_name")
        c = CounterMetricFamily("vllm:request_success", "finished sequences by finish reason",
                                labels=["model_name", "finished_reason"])
        for reason, v in sorted(timing.finished.items()):
            c.add_metric([self.model_name, reason], float(v))
        yield c
        yield timing.ttft.family("vllm:time_to_first_token_seconds",
                                 "seconds from submission to the engine to a sequence's first token", m)
        yield timing.itl.family("vllm:inter_token_latency_seconds",
                                "seconds between a sequence's consecutive engine steps with tokens", m)
        yield timing.e2e.family("vllm:e2e_request_latency_seconds",
                                "seconds from submission to the engine to a sequence's end", m)

    def render(self) -> bytes:
        return generate_latest(self.registry)
