"""Benchmarks that measure candidates and baselines side by side in one run (``qnnlab bench``)."""
