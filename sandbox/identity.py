"""Every Lambda function acts as itself: its own role's credentials, its own permissions.

On AWS each function runs in its own process with its execution role's temporary credentials in
its environment; its AWS calls are allowed by that role's policies and its Kubernetes calls carry
an EKS token signed with those credentials, which the API server maps to the role's access entry
and RBAC. The sandbox runs every handler in one process, sharing the layer's cached boto3
clients, so it does the same per call instead of per process:

- ``FunctionIdentity``: the credentials of one function's role, from ``sts:AssumeRole`` against
  the sandbox's STS once the stack is deployed (moto then answers ``GetCallerIdentity`` for the
  key with ``assumed-role/ROLE/FUNCTION``, which is what the Kubernetes authenticator sees);
- ``acting_as(identity)``: the Lambda runtime runs each invocation in it; threads the handler
  starts (its thread pools) inherit it, as a process's threads share its environment;
- botocore's ``RequestSigner`` signs with the current identity's credentials whatever client
  the call goes through: requests and presigned URLs (EKS tokens) alike;
- moto's authorisation hook evaluates the role's identity policies, read from moto's IAM at each
  call (``sandbox.iam``), for every request signed with a function's key, and answers
  AccessDenied in the service's own error shape. Calls signed with any other key (the sandbox
  itself, tests, hpctl, kubectl) are not evaluated: they stand for the account's administrator.

Each decision is recorded (``USAGE``) for ``make iam-report``, which sets what functions used
against what the template grants. A denial nobody expected fails the report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import iam

log = logging.getLogger("sandbox.identity")

_local = threading.local()
_lock = threading.Lock()
_installed = False


@dataclass
class FunctionIdentity:
    """One function's execution role and the credentials it acts with."""

    function: str  # the function's logical id in the template
    function_name: str
    role_arn: str
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]

    @property
    def session_arn(self) -> str:
        account = self.role_arn.split(":")[4]
        return f"arn:aws:sts::{account}:assumed-role/{self.role_name}/{self.function_name}"

    def assume(self, sts: Any) -> FunctionIdentity:
        """Credentials of the role, as Lambda gets them for the function (AssumeRole)."""
        creds = sts.assume_role(RoleArn=self.role_arn, RoleSessionName=self.function_name[:64])["Credentials"]
        self.access_key_id = creds["AccessKeyId"]
        self.secret_access_key = creds["SecretAccessKey"]
        self.session_token = creds["SessionToken"]
        return self

    def credentials(self) -> Any:
        from botocore.credentials import Credentials

        return Credentials(self.access_key_id, self.secret_access_key, self.session_token)


@dataclass
class Use:
    """One AWS call of a function and IAM's decision on it."""

    function: str
    action: str
    resource: str
    allowed: bool
    resource_known: bool
    expected_denial: bool = False


@dataclass
class Usage:
    """What functions did, for the report: AWS calls here, Kubernetes requests from the API server."""

    aws: list[Use] = field(default_factory=list)
    kube: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, use: Use) -> None:
        with self._lock:
            self.aws.append(use)

    def add_kube(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.kube.append(record)

    def dump(self) -> dict[str, Any]:
        with self._lock:
            aws = sorted(
                {
                    (u.function, u.action, u.resource, u.allowed, u.resource_known, u.expected_denial)
                    for u in self.aws
                }
            )
            kube = sorted({json.dumps(k, sort_keys=True) for k in self.kube})
        keys = ("function", "action", "resource", "allowed", "resource_known", "expected_denial")
        return {"aws": [dict(zip(keys, u, strict=True)) for u in aws], "kube": [json.loads(k) for k in kube]}


USAGE = Usage()


class Registry:
    """The functions' identities, by access key id and by role ARN."""

    def __init__(self) -> None:
        self.by_key: dict[str, FunctionIdentity] = {}
        self.by_role: dict[str, FunctionIdentity] = {}
        self.where: iam.Where | None = None
        self.key_names: Any = None
        self.token_owner: Any = None
        self.role_arn_of: Any = None

    def add(self, identity: FunctionIdentity) -> None:
        self.by_key[identity.access_key_id] = identity
        self.by_role[identity.role_arn] = identity

    def clear(self) -> None:
        self.by_key.clear()
        self.by_role.clear()
        self.where = None


REGISTRY = Registry()


def current() -> FunctionIdentity | None:
    return getattr(_local, "identity", None)


@contextlib.contextmanager
def acting_as(identity: FunctionIdentity | None) -> Iterator[None]:
    saved = current()
    _local.identity = identity
    try:
        yield
    finally:
        _local.identity = saved


_expecting = 0  # open expecting_denial blocks, for the API server's threads (see record_kube)


@contextlib.contextmanager
def expecting_denial() -> Iterator[None]:
    """Denials inside are what a test provokes on purpose: the report does not count them."""
    global _expecting
    saved = getattr(_local, "expect_denial", False)
    _local.expect_denial = True
    with _lock:
        _expecting += 1
    try:
        yield
    finally:
        _local.expect_denial = saved
        with _lock:
            _expecting -= 1


def record_kube(caller_arn: str, attrs: Any, allowed: bool, status: int) -> None:
    """A Kubernetes request of a function (by its role), for the report."""
    role = next((i for i in REGISTRY.by_key.values() if i.session_arn == caller_arn), None)
    if role is None:
        return
    USAGE.add_kube(
        {
            "function": role.function,
            "verb": attrs.verb,
            "group": attrs.group,
            "resource": attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else ""),
            "allowed": allowed,
            "status": status,
            # The API server answers on its own thread: a test's expecting_denial block is only
            # known process-wide there (a denial of another function meanwhile counts as expected).
            "expected_denial": _expecting > 0 and not allowed,
        }
    )


def dump_usage(directory: str | os.PathLike[str]) -> Path:
    """Write what the functions used (and what their roles grant) under ``directory``, one file
    per process; ``make iam-report`` reads them all."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = USAGE.dump()
    data["granted"] = GRANTED
    path = out / f"usage-{os.getpid()}.json"  # cumulative: each stop of a sandbox rewrites it
    path.write_text(json.dumps(data))
    return path


#: Each function's identity policies as deployed (the last sandbox of this process), for the report.
GRANTED: dict[str, list[dict]] = {}


# -- patches ------------------------------------------------------------------------------------


def install() -> None:
    """Patch botocore's signer, threads and moto's authorisation hook (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        _patch_signer()
        _patch_threads()
        _patch_moto_authorisation()
        _installed = True


def _patch_signer() -> None:
    from botocore.signers import RequestSigner

    def get(self: Any) -> Any:
        identity = current()
        if identity is not None and identity.access_key_id:
            return identity.credentials()
        return self.__dict__.get("_sandbox_credentials", self.__dict__.get("_credentials"))

    def set_(self: Any, value: Any) -> None:
        self.__dict__["_sandbox_credentials"] = value

    # A data descriptor on the class wins over the instance attribute botocore sets in __init__.
    RequestSigner._credentials = property(get, set_)  # type: ignore[attr-defined]


#: Code whose threads are the AWS services' own, not the function's (moto's Step Functions
#: interpreter, the sandbox's EventBridge deliveries and Lambda runtime), even when a function's
#: call started them in process: they act with the service's identity, not the caller's.
_SERVICE_PACKAGES = {"moto", "sandbox", "werkzeug"}  # handlers' modules are "sandbox_functions.*"
_PLUMBING = {"threading", "concurrent"}


def _started_by_handler() -> bool:
    """Whether the code starting a thread is the handler's (its pools), not a service's."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        top = module.split(".", 1)[0]
        if top not in _PLUMBING and module != __name__:
            return top not in _SERVICE_PACKAGES
        frame = frame.f_back
    return False


def _patch_threads() -> None:
    original_init = threading.Thread.__init__
    original_run = threading.Thread.run

    def init(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        inherit = current() is not None and _started_by_handler()
        self._sandbox_identity = current() if inherit else None  # type: ignore[attr-defined]
        self._sandbox_expect = getattr(_local, "expect_denial", False)  # type: ignore[attr-defined]

    def run(self: threading.Thread) -> None:
        _local.identity = getattr(self, "_sandbox_identity", None)
        _local.expect_denial = getattr(self, "_sandbox_expect", False)
        original_run(self)

    threading.Thread.__init__ = init  # type: ignore[method-assign]
    threading.Thread.run = run  # type: ignore[method-assign]


def _request_params(response: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, values in (getattr(response, "querystring", None) or {}).items():
        params[key] = values[0] if isinstance(values, list) and len(values) == 1 else values
    parsed = getattr(response, "params", None)  # moto's parse of the body, where it made one
    if isinstance(parsed, dict):
        params.update(parsed)
    body = getattr(response, "body", None)
    if isinstance(body, dict):
        params.update(body)
    elif body:
        try:
            data = json.loads(body)
        except (TypeError, ValueError):
            data = None
        if isinstance(data, dict):
            params.update(data)
    for key, value in (getattr(response, "uri_match", None) or {}).items():
        import urllib.parse

        params.setdefault(key, urllib.parse.unquote(value) if isinstance(value, str) else value)
    return params


def _role_policies(role_arn: str) -> list[dict]:
    """The role's identity policies as moto holds them now: inline and attached managed ones."""
    from moto.iam.models import iam_backends

    account = role_arn.split(":")[4]
    backend = iam_backends[account]["global"]
    role = backend.get_role_by_arn(role_arn)
    documents = [json.loads(doc) if isinstance(doc, str) else doc for doc in role.policies.values()]
    for policy in role.managed_policies.values():
        version = next((v for v in policy.versions if v.is_default), None)
        if version is not None:
            doc = version.document
            documents.append(json.loads(doc) if isinstance(doc, str) else doc)
    return documents


def _role_arn_of(name: str) -> str | None:
    from moto.iam.models import iam_backends

    where = REGISTRY.where
    if where is None:
        return None
    try:
        return iam_backends[where.account]["global"].get_role(name).arn
    except Exception:  # no such role: the call itself answers NoSuchEntity
        return None


_JSON_403 = {"eks", "lambda", "scheduler"}  # rest-json services answer AccessDeniedException with 403
_QUERY = {"iam", "sts", "cloudwatch", "cloudformation"}


def _denied(service: str, identity: FunctionIdentity, request: iam.Request, resource: str) -> Exception:
    from moto.core.exceptions import AccessDeniedError, JsonRESTError

    on = f" on resource: {resource}" if resource != iam.RESOURCE_UNKNOWN else ""
    message = (
        f"User: {identity.session_arn} is not authorized to perform: {request.action}{on} "
        f"because no identity-based policy allows the {request.action} action"
    )
    if service in _QUERY:
        return AccessDeniedError(user_arn=identity.session_arn, action=request.action)
    if service == "ec2":
        from moto.ec2.exceptions import EC2ClientError

        return EC2ClientError(
            "UnauthorizedOperation", f"You are not authorized to perform this operation. {message}"
        )
    error = JsonRESTError("AccessDeniedException", message)
    if service in _JSON_403:
        error.code = 403
    return error


def authorise(service: str, operation: str, params: dict, access_key: str, *, secure: bool = True) -> None:
    """IAM's decision on a call signed with ``access_key``; raises the service's AccessDenied."""
    identity = REGISTRY.by_key.get(access_key)
    where = REGISTRY.where
    if identity is None or where is None:
        return
    requests = [
        iam.request_context(
            service,
            operation,
            params,
            where,
            identity.role_arn,
            key_names=REGISTRY.key_names,
            token_owner=REGISTRY.token_owner,
            role_arn_of=REGISTRY.role_arn_of,
            secure_transport=secure,
        )
    ]
    requests += [
        iam.pass_role_request(role, to, identity.role_arn, where)
        for role, to in iam.passed_roles(service, operation, params)
    ]
    tagging = iam.tag_on_create(iam._SERVICE.get(service, service), operation, params, requests[0])
    if tagging is not None:
        requests.append(tagging)
    expected = getattr(_local, "expect_denial", False)
    policies = _role_policies(identity.role_arn)
    for request in requests:
        if request.action in iam.ALWAYS_ALLOWED:
            continue
        decision = iam.evaluate(policies, request)
        for resource in request.resources:
            USAGE.add(
                Use(
                    identity.function,
                    request.action,
                    resource,
                    decision.allowed,
                    request.resource_known,
                    expected_denial=expected and not decision.allowed,
                )
            )
        if not decision.allowed:
            log.info(
                "AccessDenied: %s %s on %s (%s)",
                identity.function,
                request.action,
                request.resources,
                decision.reason,
            )
            raise _denied(service, identity, request, (*request.resources, iam.RESOURCE_UNKNOWN)[0])


_S3_OBJECT = {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}
_S3_BUCKET = {"GET": "ListBucket", "HEAD": "ListBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}


def _patch_moto_authorisation() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    original_normal = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    original_s3 = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def normal(self: Any, resource: str = "*") -> None:
        key = self.get_access_key()
        if key in REGISTRY.by_key:
            try:
                operation = self._get_action()
            except Exception:  # an unroutable request: moto answers it
                operation = None
            if operation:
                authorise(self.service_name, operation, _request_params(self), key)
        original_normal(self, resource)

    def s3(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        key = self.get_access_key()
        if key in REGISTRY.by_key:
            operations = _S3_OBJECT if key_name else _S3_BUCKET
            operation = operations.get(self.method, self.method)
            authorise("s3", operation, {"Bucket": bucket_name, "Key": key_name}, key)
        original_s3(self, bucket_name, key_name)

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = normal  # type: ignore[method-assign]
    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = s3  # type: ignore[method-assign]


# -- the sandbox's side ---------------------------------------------------------------------------


def assume_all(
    specs: Any, sts: Any, where: iam.Where, key_names: Any, token_owner: Any, *, report: bool = True
) -> None:
    """Credentials for every deployed function with a role; enforcement starts now."""
    REGISTRY.where = where
    REGISTRY.key_names = key_names
    REGISTRY.token_owner = token_owner
    REGISTRY.role_arn_of = _role_arn_of
    started = time.monotonic()
    for spec in specs:
        if spec.role_arn:
            spec.identity = FunctionIdentity(spec.logical_id, spec.name, spec.role_arn).assume(sts)
            REGISTRY.add(spec.identity)
            if report:  # the project's own template (not a test's edited copy)
                GRANTED[spec.logical_id] = _role_policies(spec.role_arn)
    log.debug("assumed %d function roles in %.2fs", len(REGISTRY.by_key), time.monotonic() - started)
