"""Monitoring: a local Prometheus with the shipped rules (``prometheus``)."""
