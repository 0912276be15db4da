"""Benchmarks (not tests): run them as ``python -m benchmarks.<name>``."""
