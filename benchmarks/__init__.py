"""Benchmarks; run each from the repository root, e.g. ``python -m benchmarks.bench_node``."""
