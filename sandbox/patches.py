"""The few places where moto is bent to run the project for real, installed once per process.

moto's backends are process-wide, so these patches consult the *active* sandbox (one at a time):
- ``LambdaFunction._invoke_lambda``: call the real handler in process, not in Docker; an
  ``InvocationType=Event`` invoke is accepted at once and run later with Lambda's retries and
  dead-letter queue (moto runs it inside the request);
- the ASL interpreter's Wait, Retry back-off, task timeout and heartbeat: scaled by the
  sandbox's ``time_scale`` (``sandbox.clock``), so a 30 s Wait takes 0.3 s at 0.01 (``TimeoutSeconds``,
  ``TimeoutSecondsPath`` and ``HeartbeatSeconds`` alike; history events show the scaled value);
- task tokens (``.waitForTaskToken``): ``SendTaskSuccess``/``Failure``/``Heartbeat`` answer as
  AWS does: ``InvalidToken`` for a token no execution issued, ``TaskTimedOut`` ("the task token
  has either expired or the task associated with the token has already been closed") for one
  whose task already got its answer, timed out, or whose execution ended (moto accepts a used
  or timed-out token silently while the execution runs); ``SendTaskFailure`` keeps its cause;
- ``StopExecution`` ends an execution waiting on a task token at once and it ends ABORTED
  (moto waits out the task's timeout, then may record the timeout as FAILED);
- a task's timeout and an answer to its token are decided atomically: the answer either
  resumes the task or gets TaskTimedOut (moto races two timers and can accept, then lose, an
  answer sent at the timeout); each Retry attempt of such a task gets a new token (moto reuses
  the closed one, so every retry timed out at once);
- ``States.ALL`` no longer matches ``States.DataLimitExceeded`` (a state over 256 KiB) nor
  ``States.Runtime``: they fail the execution, as on AWS;
- a JSONPath state reads a variable (``"step.$": "$failedStep"``, ``$name.path``) as a JSONPath
  into the variable's value, as AWS does (moto sends it to JSONata, whose engine it leaves out);
- ``states:startExecution`` tasks (``.sync:2`` and the others): the task's ``StateMachineArn``/
  ``Input``/``Name`` reach boto as ``stateMachineArn``/``input``/``name`` and the answer comes back
  as AWS documents it (``ExecutionArn``, ``Output`` parsed as JSON for ``.sync:2``, dates in epoch
  milliseconds); a failed child fails the task with ``States.TaskFailed`` and the child's
  DescribeExecution, ``Error`` and ``Cause`` included, as its cause (moto passes both casings
  through unconverted, so the call failed with States.Runtime); an execution started without a
  name gets a generated one, as on AWS (moto names it ``None``, so the second unnamed child was
  ExecutionAlreadyExists);
- ``events.models.Rule.send_to_targets``: deliver to Lambda and Step Functions targets (moto
  raises NotImplementedError for them), honour ``Input``/``InputPath`` and disabled rules.

Two only save work, and change no answer: botocore's loaders share what they read across the
process (each session re-read the same JSON models: sandboxes, functions and tests build dozens),
and the ASL parser keeps the parse tree of each definition it has parsed (moto parses a state
machine's definition again for every execution; each gets its own evaluation program still).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from sandbox.active import active
from sandbox.clock import clock
from sandbox.eventbus import target_input

_installed = False
_lock = threading.Lock()


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _patch_lambda()
        _patch_terminal_errors()
        _patch_time()
        _patch_task_tokens()
        _patch_stop()
        _patch_jsonpath_variables()
        _patch_start_execution_tasks()
        _patch_events()
        _share_botocore_models()
        _cache_asl_parse_trees()
        _install_aws_extensions()
        from sandbox import identity

        identity.install()  # each function signs with, and is allowed by, its own role
        # The interpreter logs every caught task error at ERROR with the whole state; the
        # execution history already has it.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        _installed = True


def _share_botocore_models() -> None:
    """Every botocore ``Loader`` of the process shares one cache per (search paths, extras): the
    files are the installed botocore's, read-only while the process runs, and within one loader
    botocore already hands the same cached objects to every client."""
    from botocore import loaders

    shared: dict[tuple, dict] = {}
    original = loaders.Loader.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        key = (tuple(self.search_paths), tuple(self.extras_types))
        self._cache = shared.setdefault(key, {})

    loaders.Loader.__init__ = __init__


def _cache_asl_parse_trees() -> None:
    """``AmazonStateLanguageParser.parse`` lexes and parses a definition once (ANTLR in Python, a
    tenth of a second for a workflow here); every call still preprocesses the tree into a new
    program, so no execution shares evaluation state with another. A definition that does not
    parse is not kept: it raises every time, as before."""
    from moto.stepfunctions.parser.asl.parse import asl_parser

    parser = asl_parser.AmazonStateLanguageParser
    original = parser.parse
    trees: dict[str, Any] = {}

    def parse(definition: str) -> tuple[Any, Any]:
        tree = trees.get(definition)
        if tree is None:
            program, tree = original(definition)
            trees[definition] = tree
            return program, tree
        return asl_parser.Preprocessor().visit(tree), tree

    parser.parse = staticmethod(parse)


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
    synchronous_invoke = LambdaFunction.invoke

    def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> Any:
        """``InvocationType=Event``: Lambda queues the event and answers 202 at once; the handler
        runs later, retried twice and then dead-lettered (moto runs it inside the request)."""
        headers = request_headers or {}
        kind = headers.get("X-Amz-Invocation-Type") or headers.get("x-amz-invocation-type")
        if kind != "Event":
            return synchronous_invoke(self, body, request_headers, response_headers)
        active().invoke_lambda_event(self.function_name, json.loads(body) if body else {})
        return ""

    LambdaFunction.invoke = invoke


def _patch_terminal_errors() -> None:
    """``States.ALL`` matches neither ``States.DataLimitExceeded`` nor ``States.Runtime``: they are
    terminal on AWS (no Retry, no Catch), and the execution fails. moto's wildcard matches them."""
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
        ErrorEqualsDecl,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )

    terminal = {StatesErrorNameType.StatesStatesDataLimitExceeded, StatesErrorNameType.StatesRuntime}
    matches = ErrorEqualsDecl._eval_body

    def _eval_body(self: Any, env: Any) -> None:
        error_name = env.stack[-1]
        if isinstance(error_name, StatesErrorName) and error_name.typ in terminal:
            env.stack.pop()
            env.stack.append(error_name in self.error_names)  # only when named exactly
            return
        matches(self, env)

    ErrorEqualsDecl._eval_body = _eval_body


def _patch_time() -> None:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.common.timeouts.heartbeat import Heartbeat
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import Timeout
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
        WaitFunction,
    )

    def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
        deadline = time.monotonic() + max(0.0, clock.wall_seconds(wait_seconds))
        # program_state_event is set when the execution stops: a stopped execution stops waiting.
        while env.is_running():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            env.program_state_event.wait(left)

    WaitFunction._wait_interval = _wait_interval
    retrier_decl.time = SimpleNamespace(sleep=clock.sleep)

    def _scaled_eval(self: Any, env: Any) -> None:
        env.stack.append(clock.wall_seconds(self._eval_seconds(env=env)))

    Timeout._eval_body = _scaled_eval
    Heartbeat._eval_body = _scaled_eval


def task_token_owner(token: str) -> str | None:
    """The state machine whose execution issued ``token`` (what IAM authorises SendTask* on)."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    for account in list(stepfunctions_parser_backends):
        for backend in list(stepfunctions_parser_backends[account].values()):
            for execution in backend._get_executions():
                env = getattr(getattr(execution, "exec_worker", None), "env", None)
                if env is not None and env.callback_pool_manager.get(token) is not None:
                    return execution.state_machine_arn
    return None


def _patch_task_tokens() -> None:
    from moto.core.exceptions import ServiceException
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.asl.eval.callback.callback import (
        CallbackOutcomeFailure,
        CallbackOutcomeSuccess,
    )
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    def answer(backend: Any, token: str, deliver: Callable[[Any], Any]) -> None:
        """Hand the waiting task its answer; InvalidToken or TaskTimedOut as AWS answers."""
        for execution in backend._get_executions():
            worker = getattr(execution, "exec_worker", None)
            env = getattr(worker, "env", None)
            found = env.callback_pool_manager.get(token) if env is not None else None
            if found is None:
                continue
            with _token_lock:  # atomic with the waiting task's decision that it timed out
                if _closed(found) or execution.exec_status != ExecutionStatus.RUNNING:
                    gone = "Task Timed Out: 'Provided task does not exist anymore'"
                    raise ServiceException("TaskTimedOut", gone)
                deliver(found)
                return
        raise ServiceException("InvalidToken", "Invalid Token: 'Invalid token'")

    def send_task_success(self: Any, task_token: str, outcome: str) -> None:
        success = CallbackOutcomeSuccess(callback_id=task_token, output=outcome)
        answer(self, task_token, lambda e: e.notify(success))

    def send_task_failure(self: Any, task_token: str, error: Any = None, cause: Any = None) -> None:
        failure = CallbackOutcomeFailure(callback_id=task_token, error=error, cause=cause)
        answer(self, task_token, lambda e: e.notify(failure))

    def send_task_heartbeat(self: Any, task_token: str) -> None:
        answer(self, task_token, lambda e: e.notify_heartbeat())

    StepFunctionsParserBackend.send_task_success = send_task_success
    StepFunctionsParserBackend.send_task_failure = send_task_failure
    StepFunctionsParserBackend.send_task_heartbeat = send_task_heartbeat

    def send_task_failure_response(self: Any) -> Any:  # moto's drops the cause
        from moto.core.responses import EmptyResult

        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
        )
        return EmptyResult()

    StepFunctionResponse.send_task_failure = send_task_failure_response

    # One decision point for "timed out": the task's own wait on its token, against a deadline
    # set when the task starts (AWS counts TimeoutSeconds from there, the invoke included). The
    # state's outer timer, which moto races against it, gets a grace so it never decides first.
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import Timeout
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
        ResourceCondition,
    )

    callback_task = state_task_service_callback.StateTaskServiceCallback
    outer = threading.local()
    scaled_timeout = Timeout._eval_body

    def timeout_eval_body(self: Any, env: Any) -> None:
        scaled_timeout(self, env)
        if getattr(outer, "grace", False):
            outer.grace = False
            env.stack[-1] += _OUTER_GRACE_S

    Timeout._eval_body = timeout_eval_body

    original_evaluate = ExecutionState._evaluate_with_timeout

    def _evaluate_with_timeout(self: Any, env: Any) -> None:
        waits = (
            isinstance(self, callback_task)
            and self.resource.condition == ResourceCondition.WaitForTaskToken
            and not self.heartbeat
        )
        token = env.states.context_object.context_object_data.get("Task", {}).get("Token") if waits else None
        callback = env.callback_pool_manager.get(token) if token else None
        if callback is None:
            return original_evaluate(self, env)
        if _closed(callback):  # a Retry: each attempt gets its own token on AWS (moto reuses it)
            token = env.states.context_object.update_task_token()
            callback = env.callback_pool_manager.add(token)
        self.timeout.eval(env=env)
        callback._sandbox_deadline = time.monotonic() + env.stack.pop()
        outer.grace = True
        try:
            return original_evaluate(self, env)
        finally:
            outer.grace = False

    ExecutionState._evaluate_with_timeout = _evaluate_with_timeout

    def _wait_for_task_token_timeout(self: Any, timeout_seconds: float, callback_endpoint: Any) -> Any:
        deadline = getattr(callback_endpoint, "_sandbox_deadline", None)
        left = timeout_seconds if deadline is None else deadline - time.monotonic()
        callback_endpoint.wait(timeout=max(0.0, left))
        with _token_lock:
            outcome = callback_endpoint.get_outcome()
            if outcome is None:
                callback_endpoint._sandbox_closed = True
            return outcome

    callback_task._wait_for_task_token_timeout = _wait_for_task_token_timeout


#: Wall seconds the state's outer timer waits beyond TimeoutSeconds for the task's own wait.
_OUTER_GRACE_S = 5.0
_token_lock = threading.Lock()


def _closed(callback: Any) -> bool:
    """A task's token is closed once answered, timed out or interrupted (stop, state ended)."""
    return (
        getattr(callback, "_sandbox_closed", False)
        or callback._notify_event.is_set()
        or callback.get_outcome() is not None
    )


def _patch_jsonpath_variables() -> None:
    import copy
    import re

    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.common.query_language import QueryLanguageMode
    from moto.stepfunctions.parser.asl.component.common.string.string_expression import (
        StringVariableSample,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.eval.variable_store import NoSuchVariable
    from moto.stepfunctions.parser.asl.utils.json_path import NoSuchJsonPathError, extract_json

    reference = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)(.*)", re.S)
    original = StringVariableSample._eval_body

    def _eval_body(self: Any, env: Any) -> None:
        found = reference.fullmatch(self.expression)
        if self.query_language_mode != QueryLanguageMode.JSONPath or found is None:
            return original(self, env)
        name, path = found.groups()
        try:
            value = env.variable_store.get(name)
            value = extract_json(f"${path}", value) if path else value
        except (NoSuchVariable, NoSuchJsonPathError) as exc:
            cause = f"The variable reference '{self.expression}' could not be resolved: {exc}"
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesRuntime),
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(
                        taskFailedEventDetails=TaskFailedEventDetails(
                            error=StatesErrorNameType.StatesRuntime.to_name(), cause=cause
                        )
                    ),
                )
            ) from None
        env.stack.append(copy.deepcopy(value))

    StringVariableSample._eval_body = _eval_body


def _patch_start_execution_tasks() -> None:
    import datetime
    import uuid

    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    model = botocore.session.get_session().get_service_model("stepfunctions")
    operations = {name.lower(): name for name in model.operation_names}

    def operation(self: Any, action: str | None) -> Any:
        name = (action or self.resource.api_action).replace("_", "").lower()
        return model.operation_model(operations[name])

    # The conversions LocalStack's interpreter makes (moto left them out): the task's Parameters
    # are PascalCase members of the API's input shape, boto wants the shape's own names; the
    # answer goes back the other way (describe_execution's for the .sync resolvers).
    def _normalise_parameters(
        self: Any, parameters: dict, boto_service_name: Any = None, service_action_name: str | None = None
    ) -> None:
        original_normalise(self, parameters, boto_service_name, service_action_name)
        self._to_boto_request(parameters, operation(self, service_action_name).input_shape)

    def _normalise_response(
        self: Any, response: Any, boto_service_name: Any = None, service_action_name: str | None = None
    ) -> None:
        # Once: the .sync resolvers normalise describe_execution's answer, then the task its result.
        if isinstance(response, dict) and any(key[:1].islower() for key in response):
            self._from_boto_response(response, operation(self, service_action_name).output_shape)
            for key, value in response.items():  # dates as AWS gives them here: epoch milliseconds
                if isinstance(value, datetime.datetime):
                    response[key] = int(value.timestamp() * 1000)

    original_normalise = StateTaskServiceSfn._normalise_parameters
    StateTaskServiceSfn._normalise_parameters = _normalise_parameters
    StateTaskServiceSfn._normalise_response = _normalise_response

    original_start = StepFunctionsParserBackend.start_execution

    def start_execution(self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kw: Any) -> Any:
        return original_start(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kw)

    StepFunctionsParserBackend.start_execution = start_execution


class _Stopped(Exception):
    """Unwinds a stopped execution's state without recording the interrupted task as failed."""


def _patch_stop() -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback,
    )
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    def stopped(env: Any) -> bool:
        return isinstance(env.program_state(), ProgramStopped)

    original_set_stop = Environment.set_stop

    def set_stop(self: Any, stop_date: Any, cause: Any, error: Any) -> None:
        original_set_stop(self, stop_date=stop_date, cause=cause, error=error)
        # A task waiting on its token stops waiting (moto would wait out TimeoutSeconds).
        for callback in list(self.callback_pool_manager._pool.values()):
            callback.interrupt_all()

    Environment.set_stop = set_stop

    original_set_ended = Environment.set_ended

    def set_ended(self: Any) -> None:
        original_set_ended(self)
        # A task's frame ends when its TimeoutSeconds pass: its token is closed from then on, not
        # only once the frame's own wait gives up a moment later (an answer then would be lost).
        token = self.states.context_object.context_object_data.get("Task", {}).get("Token")
        callback = self.callback_pool_manager.get(token) if self.is_frame() and token else None
        if callback is not None:
            with _token_lock:
                callback._sandbox_closed = True
            callback.interrupt_all()

    Environment.set_ended = set_ended

    # Stopped is final: the interrupted task's error must not turn ABORTED into FAILED/TIMED_OUT.
    for name in ("set_error", "set_timed_out"):
        original = getattr(Environment, name)

        def guarded(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            if not stopped(self):
                _original(self, *args, **kwargs)

        setattr(Environment, name, guarded)

    StateTaskServiceCallback = state_task_service_callback.StateTaskServiceCallback
    original_wait = StateTaskServiceCallback._eval_wait_for_task_token

    def _eval_wait_for_task_token(
        self: Any, env: Any, timeout_seconds: Any, callback_endpoint: Any, **kw: Any
    ) -> Any:
        if not env.is_running():  # stopped between issuing the token and waiting on it
            callback_endpoint.interrupt_all()
        return original_wait(
            self, env=env, timeout_seconds=timeout_seconds, callback_endpoint=callback_endpoint, **kw
        )

    StateTaskServiceCallback._eval_wait_for_task_token = _eval_wait_for_task_token

    # Every state type maps its errors to history events in its own _from_error; for a stopped
    # execution, none is recorded (AWS shows ExecutionAborted only).
    import moto.stepfunctions.parser.asl.parse.preprocessor  # noqa: F401  (loads every state type)

    def guard(cls: type) -> None:
        original = cls.__dict__.get("_from_error")
        if original is not None and not getattr(original, "_sandbox", False):

            def _from_error(self: Any, env: Any, ex: Exception, _original: Any = original) -> Any:
                if stopped(env):
                    raise _Stopped() from ex
                return _original(self, env=env, ex=ex)

            _from_error._sandbox = True  # type: ignore[attr-defined]
            cls._from_error = _from_error  # type: ignore[attr-defined]
        for sub in cls.__subclasses__():
            guard(sub)

    guard(ExecutionState)


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
                active().deliver_to_target(self, target, target_input(target, original_event))
            else:
                single = copy.copy(self)
                single.targets = [target]
                original(single, original_event, transform_input)

    Rule.send_to_targets = send_to_targets
