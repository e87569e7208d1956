"""The agent's exceptions, sorted by what a retry should do.

- ``RequestError`` and its leaves: the caller sent something the agent cannot act on. Retrying the
  same request gives the same answer; fix the request (HTTP 422) or wait for the state to change
  (HTTP 409).
- ``ConfigurationError``: hyperpodrun was started with arguments or environment it cannot run with.
  Restarting the pod changes nothing; fix the command line.
- ``WorkerStartError``: workers could not be started (a missing script, a port in use). The agent
  reports FAULTED; a restart may succeed if the cause was transient.
"""


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class RequestError(AgentError):
    """A control request the agent refuses; ``status`` is the HTTP status it maps to."""

    status = 400


class RequestValidationError(RequestError):
    """The body of a request is malformed. Do not retry: fix the body.

    ``errors`` follows FastAPI's 422 shape (``{"loc": [...], "msg": ..., "type": ...}``) so clients
    written for the HyperPod elastic agent parse it unchanged.
    """

    status = 422

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


class InvalidStateError(RequestError):
    """The request is valid but not in the agent's current state. Retry after the state changes
    (poll ``GET /status``)."""

    status = 409


class ConfigurationError(AgentError):
    """hyperpodrun cannot run with the arguments or environment it was given. Fix and restart."""


class WorkerStartError(AgentError):
    """Workers of a stage could not be started; reported as a fault, a restart may succeed."""
