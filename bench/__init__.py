"""Benchmarks: load generator, baselines (naive server, raw onnxruntime), report."""
