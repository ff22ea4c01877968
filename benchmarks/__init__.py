"""Throughput benchmarks (``python benchmarks/bench.py``); see benchmarks/README.md."""
