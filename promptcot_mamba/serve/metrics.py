"""Prometheus metrics of the server, read from the engine at scrape time.

A custom collector on a private registry (one per app, so several apps in one process — tests —
do not collide): queue depth, running sequences, tokens/s, state memory, prefix cache, and request
counts by endpoint and status.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from promptcot_mamba.serve.runner import EngineRunner


class ServerMetrics:
    def __init__(self, runner: EngineRunner, model_name: str):
        self.runner = runner
        self.model_name = model_name
        self.requests: Counter[tuple[str, str]] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, str(status))] += 1

    def collect(self):
        e, st = self.runner.engine, self.runner.stats
        m = [self.model_name]

        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc, labels=["model"])
            g.add_metric(m, float(value))
            return g

        yield gauge("pcm_queue_depth", "requests waiting for a slot or still in prefill", e.num_waiting)
        yield gauge("pcm_running_sequences", "sequences decoding now", e.num_running)
        yield gauge("pcm_max_slots", "concurrent sequences the memory budget admits", e.max_slots)
        yield gauge("pcm_tokens_per_second", "generated tokens per second (last ~1 s window)", st.tokens_per_s)
        yield gauge("pcm_state_memory_bytes", "bytes of recurrent state held by the slot pool", e.state_bytes)
        yield gauge("pcm_state_bytes_per_sequence", "state bytes of one sequence (independent of its length)",
                    e.capacity["state_bytes_per_sequence"])
        yield gauge("pcm_prefix_cache_bytes", "bytes of cached prefix states", e.prefix_cache.nbytes)
        c = CounterMetricFamily("pcm_generated_tokens", "tokens generated", labels=["model"])
        c.add_metric(m, float(st.generated_tokens))
        yield c
        c = CounterMetricFamily("pcm_prompt_tokens", "prompt tokens prefilled or taken from the prefix cache",
                                labels=["model"])
        c.add_metric(m, float(e.stats["prompt_tokens"]))
        yield c
        c = CounterMetricFamily("pcm_prefix_cache_hits", "prompts that reused a cached prefix state", labels=["model"])
        c.add_metric(m, float(e.prefix_cache.hits))
        yield c
        c = CounterMetricFamily("pcm_requests", "HTTP requests by endpoint and status",
                                labels=["model", "endpoint", "status"])
        for (ep, status), v in sorted(self.requests.items()):
            c.add_metric([self.model_name, ep, status], float(v))
        yield c

    def render(self) -> bytes:
        return generate_latest(self.registry)
