"""Powertools Logger, Tracer and Metrics shared by every handler.

Service name, log level, metrics namespace and tracing come from the POWERTOOLS_* variables that
template.yaml's Globals set, so one import gives every function the same setup.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()

__all__ = ["logger", "metrics", "tracer"]
