"""Anomaly and out-of-distribution detection: detectors, their data, evaluation, input
complexity and surprise maps."""
