"""Benchmark harness: tasks as data, log-likelihood and generation scoring, forgetting reports."""
