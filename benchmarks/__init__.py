"""Benchmarks: scripts run by hand (``python benchmarks/NAME.py``); they measure, not test."""
