"""Kubernetes' ``ApiException`` and connection errors as the project's exceptions, like boto's are
in adapters/aws.py: connection failures and 5xx -> ``DependencyUnavailableError``, a timeout ->
``CallTimedOutError``, 401 (no access entry yet: EKS takes seconds to apply a new one) ->
``KubernetesAccessPendingError``, 403 -> ``AccessDeniedError``, 404 -> ``ResourceNotFoundError`` (a
read with ``missing_ok`` returns None), 409 -> ``VersionConflictError``, 429 -> ``ThrottledError``,
400/422 -> ``InvalidInputError``.
"""

from __future__ import annotations

from hyperpod_control.exceptions import (
    AccessDeniedError,
    CallTimedOutError,
    ControlPlaneError,
    DependencyUnavailableError,
    InvalidInputError,
    KubernetesAccessPendingError,
    PermanentError,
    ResourceNotFoundError,
    ThrottledError,
    VersionConflictError,
)


def is_connection_error(exc: Exception) -> bool:
    if isinstance(exc, OSError):
        return True
    try:
        import urllib3.exceptions
    except ImportError:  # pragma: no cover - urllib3 comes with botocore
        return False
    return isinstance(exc, urllib3.exceptions.HTTPError)


def _is_timeout(exc: Exception) -> bool:
    """A connect or read that got no answer (a dead node's IPs do not refuse, they stay silent)."""
    if isinstance(exc, TimeoutError):
        return True
    try:
        import urllib3.exceptions
    except ImportError:  # pragma: no cover - urllib3 comes with botocore
        return False
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return isinstance(exc.reason, urllib3.exceptions.TimeoutError)
    return isinstance(exc, urllib3.exceptions.TimeoutError)


def map_api_exception(exc: Exception, *, resource: str = "") -> ControlPlaneError:
    """Translate a kubernetes ``ApiException`` or a connection failure into the project's errors."""
    subject = f"{resource}: " if resource else ""
    status = int(getattr(exc, "status", 0) or 0)
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if status == 0 and _is_timeout(exc):
        return CallTimedOutError(f"{subject}no answer in time ({reason}).")
    if status == 0:
        return DependencyUnavailableError(f"{subject}cannot reach the Kubernetes API ({reason}: {exc}).")
    if status == 504:  # the API server's pod proxy got no answer from the pod in time
        return CallTimedOutError(f"{subject}no answer in time (504 {reason}).")
    if status == 401:
        return KubernetesAccessPendingError(
            f"{subject}the cluster does not admit the control plane's role (401 Unauthorized).",
            remedy="give the control plane's IAM role an EKS access entry on the cluster (the install "
            "workflow's EnsureAccess step creates it; a new entry takes seconds to apply) and check the "
            "cluster's authenticationMode allows access entries (API or API_AND_CONFIG_MAP).",
        )
    if status == 403:
        return AccessDeniedError(
            f"{subject}forbidden by Kubernetes RBAC (403): {getattr(exc, 'body', '') or reason}",
            remedy="associate an access policy (or RBAC: the ClusterRole hyperpod-control-plane and its "
            "binding) that allows this request with the control plane's access entry.",
        )
    if status == 404:
        return ResourceNotFoundError(f"{subject}not found (404).")
    if status == 409:
        return VersionConflictError(f"{subject}a concurrent writer changed the object (409 {reason}).")
    if status == 429:
        return ThrottledError(f"{subject}the Kubernetes API asked us to slow down (429).")
    if status >= 500:
        return DependencyUnavailableError(f"{subject}Kubernetes API error {status}: {reason}")
    if status in (400, 422):
        return InvalidInputError(f"{subject}Kubernetes refused the request ({status}): {reason}")
    return PermanentError(f"{subject}Kubernetes refused the request ({status}): {reason}")
