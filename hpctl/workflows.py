"""Starting the control plane's workflows under readable names; following them to the end with
progress output is the library's ``follow`` (``hyperpod_control.adapters.stepfunctions``)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from hyperpod_control.adapters.stepfunctions import Outcome, follow

__all__ = ["Outcome", "follow", "readable_execution_name", "start"]


def readable_execution_name(prefix: str) -> str:
    """Readable and unique: a prefix a person recognises, a time, and a random suffix."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in prefix)[:40]
    return f"{safe}-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def start(sfn: Any, state_machine_arn: str, prefix: str, payload: dict[str, Any]) -> str:
    """Start an execution under a readable unique name; returns its ARN."""
    return sfn.start_execution(
        stateMachineArn=state_machine_arn, name=readable_execution_name(prefix), input=json.dumps(payload)
    )["executionArn"]
