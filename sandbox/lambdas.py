"""Lambda functions of the deployed template, run in process with a Lambda context.

moto's Lambda backend runs code only in Docker; the sandbox replaces its invoke with
``LambdaRuntime.invoke``, which imports the handler from the function's CodeUri (each function
under its own module name, since every one of them is called ``app.py``) and calls it the way
the Lambda runtime does: an error becomes ``{"errorType", "errorMessage", "stackTrace"}`` with
the exception's class name as ``errorType``, which is what Step Functions matches ``Retry`` and
``Catch`` on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox.lambda")


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: int = 60
    memory: int = 512
    #: Asynchronous invocation (EventBridge, ``InvocationType=Event``): Lambda's own retries...
    async_max_retries: int = 2
    #: ... and where an event goes when they are spent (SQS queue ARN), as AWS does.
    dead_letter_arn: str | None = None


@dataclass
class Invocation:
    function: str
    request_id: str
    event: Any
    started: float
    duration: float = 0.0
    error_type: str | None = None
    result: Any = None


class LambdaContext:
    """The attributes of the Lambda runtime's context object that Powertools reads."""

    def __init__(self, spec: FunctionSpec, request_id: str) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"sandbox/{request_id}"
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class LambdaRuntime:
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    invocations: list[Invocation] = field(default_factory=list)
    #: Called with the seconds Lambda would wait between async retries; the sandbox scales it.
    sleep: Callable[[float], None] = time.sleep
    _handlers: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, spec: FunctionSpec) -> None:
        self.functions[spec.name] = spec

    def lookup(self, name_or_arn: str) -> FunctionSpec:
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"function {name} is not deployed in the sandbox") from None

    def _handler(self, spec: FunctionSpec) -> Callable[[Any, Any], Any]:
        with self._lock:
            handler = self._handlers.get(spec.name)
            if handler is None:
                module_name, func_name = spec.handler.rsplit(".", 1)
                path = spec.code_dir / (module_name.replace(".", "/") + ".py")
                unique = f"sandbox_functions.{spec.logical_id}.{module_name}"
                module_spec = importlib.util.spec_from_file_location(unique, path)
                if module_spec is None or module_spec.loader is None:
                    raise FileNotFoundError(f"{spec.logical_id}: no handler module at {path}")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[unique] = module
                # The function's own directory first, as on Lambda (/var/task).
                sys.path.insert(0, str(spec.code_dir))
                try:
                    module_spec.loader.exec_module(module)
                finally:
                    sys.path.remove(str(spec.code_dir))
                handler = getattr(module, func_name)
                self._handlers[spec.name] = handler
            return handler

    def invoke(self, name_or_arn: str, event: Any) -> tuple[Any, str | None]:
        """Run the handler once; returns (payload, errorType or None) like a synchronous Invoke."""
        spec = self.lookup(name_or_arn)
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        request_id = str(uuid.uuid4())
        record = Invocation(spec.name, request_id, event, time.time())
        os.environ.update(spec.environment)
        try:
            result = self._handler(spec)(event, LambdaContext(spec, request_id))
            json.dumps(result)  # Lambda fails an unserialisable result, so must we
            record.result = result
            payload, error = result, None
        except Exception as exc:
            record.error_type = type(exc).__name__
            payload = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_exception(exc)[-5:],
                "requestId": request_id,
            }
            error = type(exc).__name__
            log.info("%s failed: %s: %s", spec.name, error, exc)
        record.duration = time.time() - record.started
        with self._lock:
            self.invocations.append(record)
        return payload, error

    def invoke_async(
        self, name_or_arn: str, event: Any, on_failure: Callable[[FunctionSpec, Any, dict], None]
    ) -> None:
        """Asynchronous invocation: retry as Lambda does (1 min, then 2 min), then dead-letter."""
        spec = self.lookup(name_or_arn)
        for attempt in range(spec.async_max_retries + 1):
            payload, error = self.invoke(spec.name, event)
            if error is None:
                return
            if attempt < spec.async_max_retries:
                self.sleep(60.0 * (attempt + 1))
        on_failure(spec, event, payload)

    def calls(self, function_logical_id: str) -> list[Invocation]:
        with self._lock:
            return [
                i for i in self.invocations if self.functions[i.function].logical_id == function_logical_id
            ]
