"""The few places where moto is bent to run the project for real, installed once per process.

moto's backends are process-wide, so these patches consult the *active* sandbox (one at a time):
- ``LambdaFunction._invoke_lambda``: call the real handler in process, not in Docker;
- the ASL interpreter's Wait, Retry back-off, task timeout and heartbeat: scaled by the
  sandbox's ``time_scale``, so a 30 s Wait takes 0.3 s at 0.01;
- ``events.models.Rule.send_to_targets``: deliver to Lambda and Step Functions targets (moto
  raises NotImplementedError for them), honour ``Input``/``InputPath`` and disabled rules.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any, Protocol


class ActiveSandbox(Protocol):
    time_scale: float

    def invoke_lambda(self, function_name: str, event: Any) -> tuple[Any, str | None]: ...

    def deliver_to_target(self, rule: Any, target: dict, event: dict) -> None: ...


_active: ActiveSandbox | None = None
_installed = False
_lock = threading.Lock()


def activate(sandbox: ActiveSandbox | None) -> None:
    global _active
    if sandbox is not None and _active is not None and _active is not sandbox:
        raise RuntimeError("another sandbox is active in this process; stop it first")
    _active = sandbox


def active() -> ActiveSandbox:
    if _active is None:
        raise RuntimeError("no sandbox is active in this process")
    return _active


def scale() -> float:
    return _active.time_scale if _active is not None else 1.0


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _patch_lambda()
        _patch_time()
        _patch_events()
        _install_aws_extensions()
        # The interpreter logs every caught task error at ERROR with the whole state; the
        # execution history already has it.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        _installed = True


def _install_aws_extensions() -> None:
    # EKS add-ons, Pod Identity, access entries, HyperPod, quotas, fault hook; before the moto
    # server builds its URL maps. STS: identities from presigned URLs (EKS tokens).
    from sandbox import aws_ext
    from sandbox.kube import install_presigned_sts_identity

    aws_ext.install()
    install_presigned_sts_identity()


def _patch_lambda() -> None:
    from moto.awslambda.models import LambdaFunction

    def _invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
        payload, error = active().invoke_lambda(self.function_name, event)
        return json.dumps(payload), error is not None, ""

    LambdaFunction._invoke_lambda = _invoke_lambda


def _patch_time() -> None:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.common.timeouts.heartbeat import Heartbeat
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import Timeout
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
        WaitFunction,
    )

    def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
        deadline = time.monotonic() + max(0.0, wait_seconds * scale())
        # program_state_event is set when the execution stops: a stopped execution stops waiting.
        while env.is_running():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            env.program_state_event.wait(left)

    WaitFunction._wait_interval = _wait_interval
    retrier_decl.time = SimpleNamespace(sleep=lambda seconds: time.sleep(seconds * scale()))

    def _scaled_eval(self: Any, env: Any) -> None:
        env.stack.append(self._eval_seconds(env=env) * scale())

    Timeout._eval_body = _scaled_eval
    Heartbeat._eval_body = _scaled_eval


def _patch_events() -> None:
    from moto.events.models import Rule

    original = Rule.send_to_targets

    def send_to_targets(self: Any, original_event: dict, transform_input: bool = True) -> None:
        if getattr(self, "state", "ENABLED") != "ENABLED":
            return
        if not self.event_pattern.matches_event(original_event):
            return
        for target in self.targets:
            service = target["Arn"].split(":")[2]
            if service in ("lambda", "states"):
                active().deliver_to_target(self, target, _target_input(target, original_event))
            else:
                single = copy.copy(self)
                single.targets = [target]
                original(single, original_event, transform_input)

    Rule.send_to_targets = send_to_targets


def _target_input(target: dict, event: dict) -> Any:
    """What the target receives: the event, ``Input`` (constant JSON) or ``InputPath``."""
    if target.get("Input"):
        return json.loads(target["Input"])
    if target.get("InputPath"):
        from jsonpath_ng import parse  # moto's own dependency

        matches = parse(target["InputPath"]).find(event)
        return matches[0].value if matches else None
    if target.get("InputTransformer"):
        from moto.events.utils import EventTemplateParser

        transformer = target["InputTransformer"]
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    return event
