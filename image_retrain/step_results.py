"""The one line a pipeline step reports about its outcome ("[push] model version 17 published at ...").

Steps log it at INFO through this logger. `image-retrain run` and `make run` show these lines on stdout while every
other INFO line stays hidden (pipelines/console.py); elsewhere (Kubeflow pods) they are ordinary INFO log lines.
"""
from __future__ import annotations

import logging

log = logging.getLogger("image_retrain.step_results")


def report(step: str, message: str) -> None:
    log.info("[%s] %s", step, message)
