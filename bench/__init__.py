"""Reproducible benchmarks against peer tools (``python -m bench [NAME ...]``); not tests."""
