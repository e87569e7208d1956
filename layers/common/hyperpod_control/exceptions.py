"""The project's exception hierarchy, sorted by what a retry should do.

Step Functions matches ``Retry``/``Catch`` on the error name, which for a Lambda task is the
exception's class name. So the ASL files name these classes: ``RetryableError`` subclasses are
retried with backoff, ``PermanentError`` subclasses go straight to the ``Catch`` that records the
failure. Leaves name the cause precisely, for messages and metrics; ASL matches on the leaf when a
workflow must branch on it (for example ``ClusterNotReadyError`` loops on a Wait state).
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.remedy}" if self.remedy else self.message


class RetryableError(ControlPlaneError):
    """Trying again later may succeed: throttling, a service hiccup, a lost race."""


class ThrottledError(RetryableError):
    """An AWS or Kubernetes API asked us to slow down."""


class DependencyUnavailableError(RetryableError):
    """A service we call failed on its side (5xx, timeout, connection reset)."""


class CallTimedOutError(DependencyUnavailableError):
    """A call got no answer within its timeout. Of an agent, it is news about the agent (its node
    may be dead: a dead instance's connections hang rather than refuse), not a reason to wait
    again at once."""


class VersionConflictError(RetryableError):
    """A conditional write lost to a concurrent writer; re-read and decide again."""


class DeadlineExceededError(RetryableError):
    """The invocation's time ran low before the step finished (deadline.py); the step stopped
    itself before Lambda would have, and runs again."""


class WatchExpiredError(RetryableError):
    """A Kubernetes watch resumed from a resourceVersion the API server no longer keeps (410
    Gone): list again, and watch from the list's version."""


class LockHeldError(RetryableError):
    """Another workflow holds the cluster's lock."""


class ClusterNotReadyError(RetryableError):
    """The cluster exists but is in a transitional state (Creating, Updating, ...)."""


class PermanentError(ControlPlaneError):
    """Retrying will not help until a person changes something."""


class InvalidInputError(PermanentError):
    """The request does not validate; the message names the field and the fix."""


class ResourceNotFoundError(PermanentError):
    """A resource the request names does not exist."""


class AccessDeniedError(PermanentError):
    """The control plane's role lacks a permission."""


class CredentialsError(PermanentError):
    """AWS could not be called with the caller's credentials: none, or ones AWS refuses."""


class CredentialsMissingError(CredentialsError):
    """No AWS credentials were found (environment, profile, SSO cache, instance role)."""


class CredentialsExpiredError(CredentialsError):
    """The credentials were found but AWS refuses them: the session expired, or the key is not
    (or no longer) valid."""


class RegionMissingError(PermanentError):
    """No AWS Region is configured, so no endpoint can be chosen."""


class ClusterUnusableError(PermanentError):
    """The cluster is in a state the control plane cannot work with (Failed, Deleting)."""


class OperatorConflictError(PermanentError):
    """The cluster already runs the other training operator."""


class ClusterMismatchError(PermanentError):
    """A workflow step was asked to act on another cluster than the one its workflow locked, or
    without holding the lock at all (a confused deputy); the step changed nothing."""


class PreflightFailedError(PermanentError):
    """One or more prerequisite checks failed; the message lists each with its remedy."""


class PreflightUncheckedError(PreflightFailedError):
    """No check failed, but some could not run because AWS could not be called (credentials,
    access denied, network, throttling): the cluster is not known to be ready."""


# -- install / uninstall workflow leaves ---------------------------------------------------------


class KubernetesAccessPendingError(RetryableError):
    """The cluster's API server does not yet admit the control plane (a new access entry takes
    seconds to apply); retried, then reported as not authorised."""


class OperatorNotReadyError(RetryableError):
    """The operator is installed but not ready yet (Deployment not available, CRD not
    Established); retried with backoff before VerifyOperator gives up."""


class AddonFailedError(PermanentError):
    """The add-on ended CREATE_FAILED, UPDATE_FAILED or DEGRADED; the message carries its health
    issues."""


class AddonWaitTimeoutError(PermanentError):
    """The add-on stayed CREATING/UPDATING/DELETING longer than the workflow's bounded wait."""


class JobsRunningError(PermanentError):
    """Uninstall refused: HyperPodPytorchJobs still exist (pass force to remove them with it)."""


# -- upgrade workflow leaves ---------------------------------------------------------------------


class UpgradeRefusedError(PermanentError):
    """The upgrade plan refused: the target version does not exist or does not fit the cluster,
    no add-on is installed, or jobs use what the target lacks (without force)."""


class UpgradeRolledBackError(PermanentError):
    """The add-on update failed; the workflow rolled back to the previous version and resubmitted
    the jobs. The message names the step that failed and why."""


class JobsDrainTimeoutError(PermanentError):
    """Deleted HyperPodPyTorchJobs were still present after the workflow's bounded wait."""


class SnapshotMissingError(PermanentError):
    """A job the workflow deleted has no manifest in the snapshot bucket (it stays indexed)."""


# -- node_health leaves ----------------------------------------------------------------------------


class NodeActionError(RetryableError):
    """node_health recorded the change but a Kubernetes or SageMaker call about it failed; the
    event fails so Lambda's asynchronous retries run it again (the retry resumes the change) and,
    when they are spent, the event lands in the dead-letter queue."""


# -- supervise_job leaves --------------------------------------------------------------------------


class FaultPendingError(ControlPlaneError):
    """Not a failure: the Monitor step found a fault already recorded on the JOB item, so it does
    not wait for a wake-up that may never come (its sender found no token to wake). The ASL
    catches it and polls at once."""
