"""Benchmarks: SSD kernels (ssd_bench), decode (decode_bench), Figure 2 throughput (throughput)."""
