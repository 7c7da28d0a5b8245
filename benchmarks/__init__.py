"""Benchmark suite: `python -m benchmarks` measures our hot paths against peers and (re)writes BENCHMARKS.md."""
