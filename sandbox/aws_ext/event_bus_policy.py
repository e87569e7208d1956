"""An event bus's resource policy, evaluated on ``PutEvents`` as EventBridge does; moto stores
the policy (``PutPermission``, ``DescribeEventBus``) but lets every caller put anything.

The caller is who signed the request: the principal moto's STS answers ``GetCallerIdentity`` with
for the request's access key (an assumed role's session stands for its role, the ARN that
``aws:PrincipalArn`` carries; a key moto does not know is its default user). Each bus an entry
names (``EventBusName``: a name or an ARN; none is ``default``) is one authorisation with the
request's context keys: ``aws:PrincipalArn``, ``aws:PrincipalAccount``, ``aws:RequestedRegion``,
and the multivalued ``events:source`` and ``events:detail-type`` of the entries for that bus
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-conditions.html). A statement
applies when its ``Principal`` names the caller (``*``, the caller's account, or its ARN), its
``Action`` and ``Resource`` match and its conditions hold (``sandbox.iam``'s evaluation). An
explicit Deny refuses the whole call with ``AccessDeniedException``, as EventBridge answers; a
caller of another account also needs an Allow. Within the bus's account the caller's identity
policies decide the rest, which the sandbox evaluates only for Lambda functions
(``sandbox.identity``); other callers stand for the account's administrator.

Every call is recorded (``calls()``): who put which sources on which bus, and whether it was let
through, so tests can tell who really sent an event.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

ACTION = "events:PutEvents"
_ARN = re.compile(r"^arn:([^:]+):(iam|sts)::(\d{12}):(.+)$")


@dataclass(frozen=True)
class PutEventsCall:
    """One PutEvents as EventBridge authorised it."""

    principal_arn: str  # aws:PrincipalArn (a session's role, not the session)
    caller_arn: str  # what GetCallerIdentity answers for the key (assumed-role/ROLE/SESSION ...)
    bus_arn: str
    sources: tuple[str, ...]
    detail_types: tuple[str, ...]
    allowed: bool
    reason: str = ""


_calls: list[PutEventsCall] = []
_lock = threading.Lock()


def calls() -> list[PutEventsCall]:
    with _lock:
        return list(_calls)


def clear() -> None:
    with _lock:
        _calls.clear()


def _record(call: PutEventsCall) -> None:
    with _lock:
        _calls.append(call)


# -- the caller ----------------------------------------------------------------------------------


def caller_identity(access_key: str, account: str, region: str) -> tuple[str, str]:
    """(caller ARN, aws:PrincipalArn) of a request signed with ``access_key``."""
    from moto.sts.models import sts_backends

    _user_id, arn, _account = sts_backends[account]["global"].get_caller_identity(access_key, region)
    return arn, principal_arn(arn)


def principal_arn(caller_arn: str) -> str:
    """``aws:PrincipalArn`` of a caller: an assumed role's session is its role (with the role's
    path, read from the sandbox's IAM), a user is itself (moto names its default user
    ``sts::...:user/moto``; IAM names users under ``iam::``)."""
    m = _ARN.match(caller_arn)
    if not m:
        return caller_arn
    partition, _service, account, resource = m.groups()
    kind, _, rest = resource.partition("/")
    if kind == "assumed-role":
        role_name = rest.split("/")[0]
        return _role_arn(account, partition, role_name) or f"arn:{partition}:iam::{account}:role/{role_name}"
    if kind == "user":
        return f"arn:{partition}:iam::{account}:{resource}"
    return caller_arn


def _role_arn(account: str, partition: str, name: str) -> str | None:
    from moto.iam.models import iam_backends

    try:
        return iam_backends[account][partition].get_role(name).arn
    except Exception:  # no such role in the sandbox's IAM: the ARN without a path
        return None


# -- the decision --------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def names_caller(principal: Any, caller_principal: str, caller_account: str) -> bool:
    """Whether a resource policy statement's ``Principal`` covers the caller."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for value in _as_list(principal.get("AWS")):
        value = str(value)
        if value == "*" or value == caller_principal:
            return True
        if value in (caller_account, f"arn:aws:iam::{caller_account}:root"):
            return True
    return False


def decide(
    policy: dict | None,
    bus_arn: str,
    caller_principal: str,
    caller_account: str,
    region: str,
    entries: list[dict],
) -> tuple[bool, str]:
    """(allowed, why) for ``entries`` put on the bus by the caller, under the bus's policy."""
    from sandbox import iam

    bus_account = bus_arn.split(":")[4]
    statements = [
        s
        for s in _as_list((policy or {}).get("Statement"))
        if isinstance(s, dict) and names_caller(s.get("Principal"), caller_principal, caller_account)
    ]
    request = iam.Request(
        ACTION,
        (bus_arn,),
        {
            "aws:PrincipalArn": [caller_principal],
            "aws:PrincipalAccount": [caller_account],
            "aws:RequestedRegion": [region],
            "events:source": sorted({str(e.get("Source", "")) for e in entries}),
            "events:detail-type": sorted({str(e.get("DetailType", "")) for e in entries}),
        },
    )
    decision = iam.evaluate([{"Statement": statements}], request)
    if decision.reason == "explicit deny":
        return False, "with an explicit deny in a resource-based policy"
    if caller_account != bus_account and not decision.allowed:
        return False, "because no resource-based policy allows the events:PutEvents action"
    return True, decision.reason


def bus_of(entry: dict, account: str, region: str) -> tuple[str, str]:
    """(account, name) of the bus an entry names: a name, an ARN, or nothing (``default``)."""
    name = entry.get("EventBusName") or "default"
    if name.startswith("arn:"):
        parts = name.split(":")
        return parts[4], parts[5].removeprefix("event-bus/")
    return account, name


def authorise(access_key: str, account: str, region: str, entries: list[dict]) -> None:
    """Raise EventBridge's AccessDeniedException when a bus's policy refuses the call."""
    from moto.core.exceptions import JsonRESTError
    from moto.events.models import events_backends

    caller, principal = caller_identity(access_key, account, region)
    by_bus: dict[tuple[str, str], list[dict]] = {}
    for entry in entries:
        by_bus.setdefault(bus_of(entry, account, region), []).append(entry)
    for (bus_account, name), mine in by_bus.items():
        bus = events_backends[bus_account][region].event_buses.get(name)
        if bus is None:
            continue  # moto answers the entry's own error for an unknown bus
        policy = json.loads(bus.policy) if bus.policy else None
        allowed, why = decide(policy, bus.arn, principal, account, region, mine)
        _record(
            PutEventsCall(
                principal,
                caller,
                bus.arn,
                tuple(sorted({str(e.get("Source", "")) for e in mine})),
                tuple(sorted({str(e.get("DetailType", "")) for e in mine})),
                allowed,
                why,
            )
        )
        if not allowed:
            raise JsonRESTError(
                "AccessDeniedException",
                f"User: {caller} is not authorized to perform: {ACTION} on resource: {bus.arn} {why}",
            )


def install() -> None:
    from moto.events.responses import EventsHandler

    original = EventsHandler.put_events
    if getattr(original, "_sandbox_policy", False):
        return

    def put_events(self: Any) -> str:
        entries = self._get_param("Entries") or []
        authorise(self.get_access_key(), self.current_account, self.region, entries)
        return original(self)

    put_events._sandbox_policy = True  # type: ignore[attr-defined]
    EventsHandler.put_events = put_events
