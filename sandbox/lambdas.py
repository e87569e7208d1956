"""Lambda functions of the deployed template, run in process with a Lambda context.

moto's Lambda backend runs code only in Docker; the sandbox replaces its invoke with
``LambdaRuntime.invoke``, which imports the handler from the function's CodeUri (each function
under its own module name, since every one of them is called ``app.py``) and calls it the way
the Lambda runtime does: an error becomes ``{"errorType", "errorMessage", "stackTrace"}`` with
the exception's class name as ``errorType``, which is what Step Functions matches ``Retry`` and
``Catch`` on.

AWS's limits hold (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html):
- an invocation stops at its function's ``Timeout`` (wall seconds, as on AWS: the handler's work
  runs at real speed) and answers ``Sandbox.Timedout`` ("Task timed out after N.00 seconds"),
  the error Step Functions sees. A thread cannot be killed, so the handler's thread gets
  ``LambdaTimedOut`` raised in it at its next Python instruction (a socket read it is blocked in
  ends first); whatever it does after the timeout is discarded, as a frozen sandbox's would be;
- a synchronous request or response over 6 MB, an asynchronous event over 256 KB: the handler
  never runs (``RequestEntityTooLargeException``, not retried) or its result is replaced by
  ``Function.ResponseSizeTooLarge``;
- a function's ``ReservedConcurrentExecutions`` caps its concurrent invocations: one more is
  throttled (``TooManyRequestsException``, "Rate Exceeded."), which a synchronous caller gets as
  its error and an asynchronous event waits out, retried with back-off for up to six hours
  without using up its two retries (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html).

What a handler prints and logs, its metrics (EMF) and AWS/Lambda's own metrics go where Lambda
sends them, through ``LambdaRuntime.monitor`` (``sandbox.cloudwatch``), not to the console.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox.lambda")

SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024  # request and response of a synchronous invocation
THROTTLED = "TooManyRequestsException"
#: How long Lambda keeps retrying an asynchronous event it throttles (sandbox seconds).
THROTTLED_EVENT_MAX_AGE = 6 * 3600
ASYNC_EVENT_LIMIT = 256 * 1024  # the event of an asynchronous invocation
TIMED_OUT = "Sandbox.Timedout"


class LambdaTimedOut(BaseException):
    """Raised inside a handler's thread once its invocation timed out. A BaseException, so that
    the handler's own ``except Exception`` cannot swallow it and carry on."""


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    ident = thread.ident
    if ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


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
    #: The function's own execution role, and the credentials it acts with once the stack is
    #: deployed (``sandbox.identity``); None: it acts as the sandbox itself.
    role_arn: str = ""
    identity: Any = None
    #: ``ReservedConcurrentExecutions``: at most this many invocations at once (None: no cap).
    reserved_concurrency: int | None = None


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
    #: Where each invocation's output, EMF metrics and AWS/Lambda metrics go (``sandbox.cloudwatch``).
    monitor: Any = None
    _handlers: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: dict[str, int] = field(default_factory=dict)

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
        raw = event if isinstance(event, (str, bytes)) else json.dumps(event)
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        request_id = str(uuid.uuid4())
        record = Invocation(spec.name, request_id, event, time.time())
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > SYNC_PAYLOAD_LIMIT:
            payload = _error_payload(
                "RequestEntityTooLargeException",
                f"Request must be smaller than {SYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation",
                request_id,
            )
            return self._done(record, payload, "RequestEntityTooLargeException")
        if not self._admit(spec):
            return self._done(record, _error_payload(THROTTLED, "Rate Exceeded.", request_id), THROTTLED)
        try:
            return self._run(spec, record, event)
        finally:
            with self._lock:
                self._running[spec.name] -= 1

    def _admit(self, spec: FunctionSpec) -> bool:
        """One more concurrent invocation of ``spec``, unless its reserved concurrency is reached."""
        with self._lock:
            running = self._running.get(spec.name, 0)
            if spec.reserved_concurrency is not None and running >= spec.reserved_concurrency:
                return False
            self._running[spec.name] = running + 1
            return True

    def _run(self, spec: FunctionSpec, record: Invocation, event: Any) -> tuple[Any, str | None]:
        request_id = record.request_id
        os.environ.update(spec.environment)
        outcome: dict[str, Any] = {}
        handler = self._handler(spec)
        context = LambdaContext(spec, request_id)
        monitor = self.monitor

        def run() -> None:
            from sandbox.identity import acting_as

            output = monitor.invocation(spec, request_id) if monitor else contextlib.nullcontext()
            try:
                with output, acting_as(spec.identity):
                    outcome["result"] = handler(event, context)
            except LambdaTimedOut:
                pass  # the invocation already answered Sandbox.Timedout
            except Exception as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run, name=f"lambda-{spec.name}-{request_id[:8]}", daemon=True)
        thread.start()
        thread.join(spec.timeout)
        if thread.is_alive():
            _raise_in(thread, LambdaTimedOut)
            message = f"RequestId: {request_id} Error: Task timed out after {spec.timeout:.2f} seconds"
            log.info("%s: %s", spec.name, message)
            return self._done(record, _error_payload(TIMED_OUT, message, request_id), TIMED_OUT)
        if "error" in outcome:
            exc = outcome["error"]
            error = type(exc).__name__
            payload = _error_payload(error, str(exc), request_id, traceback.format_exception(exc)[-5:])
            log.info("%s failed: %s: %s", spec.name, error, exc)
            return self._done(record, payload, error)
        result = outcome.get("result")
        try:
            body = json.dumps(result)  # Lambda fails an unserialisable result, so must we
        except (TypeError, ValueError) as exc:
            payload = _error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}", request_id)
            return self._done(record, payload, "Runtime.MarshalError")
        if len(body.encode()) > SYNC_PAYLOAD_LIMIT:
            error = "Function.ResponseSizeTooLarge"
            message = (
                f"Response payload size exceeded maximum allowed payload size ({SYNC_PAYLOAD_LIMIT} bytes)."
            )
            return self._done(record, _error_payload(error, message, request_id), error)
        record.result = result
        return self._done(record, result, None)

    def _done(self, record: Invocation, payload: Any, error: str | None) -> tuple[Any, str | None]:
        record.error_type = error
        record.duration = time.time() - record.started
        with self._lock:
            self.invocations.append(record)
        if self.monitor is not None:
            self.monitor.finished(self.functions[record.function], record)
        return payload, error

    def invoke_async(
        self, name_or_arn: str, event: Any, on_failure: Callable[[FunctionSpec, Any, dict], None]
    ) -> None:
        """Asynchronous invocation: retry as Lambda does (1 min, then 2 min), then dead-letter."""
        spec = self.lookup(name_or_arn)
        raw = event if isinstance(event, (str, bytes)) else json.dumps(event)
        if len(raw.encode() if isinstance(raw, str) else raw) > ASYNC_EVENT_LIMIT:
            # Refused by the Invoke API itself (a 4xx): no retry, the handler never runs.
            message = f"Request must be smaller than {ASYNC_EVENT_LIMIT} bytes for the Invoke operation"
            on_failure(spec, event, _error_payload("RequestEntityTooLargeException", message, ""))
            return
        attempt, throttled_for, backoff = 0, 0.0, 1.0
        while True:
            payload, error = self.invoke(spec.name, event)
            if error is None:
                return
            if error == THROTTLED and throttled_for < THROTTLED_EVENT_MAX_AGE:
                # Throttled events wait for concurrency, not counted as retries.
                self.sleep(backoff)
                throttled_for += backoff
                backoff = min(backoff * 2, 300.0)
                continue
            if attempt >= spec.async_max_retries:
                break
            attempt += 1
            self.sleep(60.0 * attempt)
        on_failure(spec, event, payload)

    @contextlib.contextmanager
    def timeout(self, function_logical_id: str, seconds: int) -> Iterator[FunctionSpec]:
        """Run with ``function_logical_id``'s Timeout set to ``seconds`` (a test's short stand-in
        for the template's, so that a timeout happens in seconds), then put it back."""
        (spec,) = [f for f in self.functions.values() if f.logical_id == function_logical_id]
        saved, spec.timeout = spec.timeout, seconds
        try:
            yield spec
        finally:
            spec.timeout = saved

    def calls(self, function_logical_id: str) -> list[Invocation]:
        with self._lock:
            return [
                i for i in self.invocations if self.functions[i.function].logical_id == function_logical_id
            ]


def _error_payload(error: str, message: str, request_id: str, trace: list[str] | None = None) -> dict:
    payload: dict[str, Any] = {"errorType": error, "errorMessage": message, "requestId": request_id}
    if trace is not None:
        payload["stackTrace"] = trace
    return payload
