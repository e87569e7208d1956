"""Shared machinery of the moto extensions: timed transitions on the sandbox clock, errors, ids,
paging.

Everything here is process-wide, like moto's own backends. State that belongs to an emulated
account (add-ons, associations, nodes...) lives on moto's backend objects, so moto's reset
(``mock_aws`` stop, ``POST /moto-api/reset``) forgets it with the rest.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import string
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from moto.core.exceptions import ServiceException

from sandbox.clock import clock


@dataclass
class Delays:
    """How long each asynchronous change takes, in sandbox seconds."""

    addon_create: float = 30.0
    addon_update: float = 30.0
    addon_delete: float = 15.0
    cluster_update: float = 60.0
    hyperpod_create: float = 0.0
    node_reboot: float = 120.0
    node_replace: float = 600.0
    software_update: float = 900.0


delays = Delays()


def set_delays(**values: float) -> None:
    known = {f.name for f in fields(Delays)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown delays {sorted(unknown)}; known: {sorted(known)}")
    for key, value in values.items():
        setattr(delays, key, float(value))


def reset_delays() -> None:
    for f in fields(Delays):
        setattr(delays, f.name, f.default)


_sequence = itertools.count()
_applying = threading.local()
#: Transitions are applied by whichever thread reads first: moto's request threads in server mode,
#: the Lambda handlers, and the sandbox's mirrors (``sandbox/kube/node_mirror.py``) polling. Two
#: readers must not both pop the same due transition (or one not yet due); re-entrant because an
#: applied transition may queue the next one.
transitions_lock = threading.RLock()


class Timed:
    """A resource whose status changes later: transitions are queued and applied when read.

    No thread drives them: every describe/list calls ``settle()``, which applies the transitions
    that are due by then, in order. A transition may queue the next one (reboot: ShuttingDown
    -> Pending -> Running).
    """

    _transitions: list[tuple[float, int, Callable[[], None]]]

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        with transitions_lock:
            if not hasattr(self, "_transitions"):
                self._transitions = []
            # A transition queued by another one starts from when that one was due, not from the
            # read that applied it late; the sequence number keeps same-instant transitions in order.
            start = _applying.due if getattr(_applying, "due", None) is not None else clock.seconds()
            self._transitions.append((start + max(0.0, delay), next(_sequence), action))
            self._transitions.sort(key=lambda t: (t[0], t[1]))

    def complete(self) -> None:
        """Apply every queued transition now, whatever sandbox time says (world building)."""
        with transitions_lock:
            while getattr(self, "_transitions", None):
                _, _, action = self._transitions.pop(0)
                action()

    def cancel_transitions(self) -> None:
        with transitions_lock:
            self._transitions = []

    def settle(self) -> None:
        if not getattr(self, "_transitions", None):
            return
        with transitions_lock:
            now = clock.seconds()
            while self._transitions and self._transitions[0][0] <= now:
                due, _, action = self._transitions.pop(0)
                _applying.due = due
                try:
                    action()
                finally:
                    _applying.due = None

    @property
    def pending(self) -> bool:
        return bool(getattr(self, "_transitions", None))


# -- errors -------------------------------------------------------------------------------------


class AwsError(ServiceException):
    """An error AWS documents, serialised by moto with the operation's service model.

    ``code`` must be the error shape's name (``ResourceNotFoundException``, ``ResourceNotFound``);
    keyword arguments become the shape's extra members (``clusterName``, ``addonName``...).
    """

    def __init__(self, code: str, message: str, **members: Any) -> None:
        super().__init__(code, message)
        for key, value in members.items():
            setattr(self, key, value)


# -- ids and helpers ----------------------------------------------------------------------------

_LOWER_ALNUM = string.ascii_lowercase + string.digits


def random_chars(n: int, alphabet: str = _LOWER_ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def random_hex(n: int) -> str:
    return "".join(secrets.choice("0123456789abcdef") for _ in range(n))


def paginate(
    items: list[Any], max_results: int | None, next_token: str | None, default: int = 100
) -> tuple[list[Any], str | None]:
    """Slice ``items`` AWS-style; the token is opaque to clients (an encoded offset)."""
    start = 0
    if next_token:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(next_token.encode()).decode())["offset"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AwsError("InvalidParameterException", "The nextToken provided is not valid.") from exc
    size = max_results or default
    page = items[start : start + size]
    end = start + size
    token = None
    if end < len(items):
        token = base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode()
    return page, token


def parsed_params(response: Any) -> dict[str, Any]:
    """The request's parameters parsed with the operation's botocore model (path, query, body).

    moto's EKS responses read raw JSON; the model-driven parser gives typed values (integers,
    booleans, query-string lists) and URI labels decoded, the same in process and in server mode.
    """
    if not getattr(response, "_ext_params_parsed", False):
        response._get_action()  # sets uri_match from the request's method and path
        response.parse_parameters(response.normalized_request)
        response._ext_params_parsed = True
    params = response.params
    if hasattr(params, "original_dict"):
        params = params.original_dict()
    return dict(params)


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def first(items: Iterable[Any], predicate: Callable[[Any], bool]) -> Any:
    return next((item for item in items if predicate(item)), None)
