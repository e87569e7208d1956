"""IAM's decision for one request of a Lambda function's role: what moto does not evaluate.

moto stores roles and policies but lets every caller do everything. The sandbox evaluates the
identity policies of each function's execution role on every AWS call the function makes (see
``sandbox.identity``), the way IAM does within one account
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit Deny wins, else an Allow whose Action, Resource and Condition all match, else an
implicit deny.

Evaluated: ``Action``/``NotAction`` and ``Resource``/``NotResource`` with IAM's wildcards (actions
case-insensitively), and the condition operators the template uses (String*, Arn*, Bool, Null,
with ``...IfExists`` and the ``ForAllValues:``/``ForAnyValue:`` set qualifiers) over the context
keys ``request_context`` derives from the request: ``aws:PrincipalArn``, ``aws:PrincipalAccount``,
``aws:RequestedRegion``, ``aws:SecureTransport``, ``dynamodb:LeadingKeys``,
``iam:PassedToService``, ``iam:PolicyARN``, ``iam:PermissionsBoundary``, ``eks:policyArn``,
``eks:principalArn``, ``events:source``, ``events:detail-type``.

Not evaluated: resource policies (S3 bucket, SQS queue, Lambda permissions: the sandbox's own
deliveries stand in for the services that use them; the event bus's policy is evaluated on
PutEvents by ``sandbox/aws_ext/event_bus_policy.py``), permission boundaries, SCPs,
session policies, tags (``aws:ResourceTag``), and policy variables (``${aws:username}``). Where
the sandbox cannot name a request's resource (``RESOURCE_UNKNOWN``) the action alone is checked
and the report says so.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: The resource of a request the sandbox cannot name: only statements for "*" match it.
RESOURCE_UNKNOWN = "*"
#: A resource AWS would name but the request cannot tell (a task token no execution issued: the
#: call answers InvalidToken either way): any Resource matches, the action alone is checked.
RESOURCE_ANY = "<any>"


@dataclass(frozen=True)
class Request:
    """One AWS API call as IAM sees it."""

    action: str  # "dynamodb:GetItem"
    resources: tuple[str, ...]
    context: dict[str, list[str]] = field(default_factory=dict)

    @property
    def resource_known(self) -> bool:
        return RESOURCE_UNKNOWN not in self.resources and RESOURCE_ANY not in self.resources


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: "allow" (the statements that allowed it), "explicit deny" or "implicit deny"
    reason: str
    statements: tuple[str, ...] = ()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.IGNORECASE if ignore_case else 0
    return re.fullmatch(regex, value, flags | re.DOTALL) is not None


def _matches_any(patterns: Iterable[str], value: str, *, ignore_case: bool = False) -> bool:
    return any(_glob(str(p), value, ignore_case=ignore_case) for p in patterns)


_STRING_OPS = {
    "StringEquals": lambda want, have: have == want,
    "StringNotEquals": lambda want, have: have == want,
    "StringEqualsIgnoreCase": lambda want, have: have.lower() == want.lower(),
    "StringNotEqualsIgnoreCase": lambda want, have: have.lower() == want.lower(),
    "StringLike": lambda want, have: _glob(want, have),
    "StringNotLike": lambda want, have: _glob(want, have),
    "ArnEquals": lambda want, have: have == want,
    "ArnNotEquals": lambda want, have: have == want,
    "ArnLike": lambda want, have: _glob(want, have),
    "ArnNotLike": lambda want, have: _glob(want, have),
    "Bool": lambda want, have: have.lower() == str(want).lower(),
}


class UnsupportedCondition(ValueError):
    """A condition operator the sandbox does not evaluate: it refuses to guess."""


def _condition_holds(operator: str, key: str, wanted: list[Any], context: dict[str, list[str]]) -> bool:
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    present = key in context
    values = context.get(key, [])
    if op == "Null":
        return any((str(w).lower() == "true") == (not present) for w in wanted)
    if op not in _STRING_OPS:
        raise UnsupportedCondition(f"condition operator {operator} is not evaluated by the sandbox")
    negated = "Not" in op
    test = _STRING_OPS[op]

    def one(value: str) -> bool:
        hit = any(test(str(w), value) for w in wanted)
        return not hit if negated else hit

    if not present:
        # A missing key: ...IfExists and negated operators hold, ForAllValues holds (empty set).
        return if_exists or negated or qualifier == "ForAllValues"
    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    # single-valued keys and ForAnyValue: some value satisfies the operator
    return any(one(v) for v in values)


def _statement_applies(statement: dict, request: Request, resource: str) -> bool:
    if "NotAction" in statement:
        if _matches_any(_as_list(statement["NotAction"]), request.action, ignore_case=True):
            return False
    elif not _matches_any(_as_list(statement.get("Action")), request.action, ignore_case=True):
        return False
    if resource == RESOURCE_ANY:
        pass
    elif "NotResource" in statement:
        if resource == RESOURCE_UNKNOWN or _matches_any(_as_list(statement["NotResource"]), resource):
            return False
    else:
        patterns = [str(p) for p in _as_list(statement.get("Resource"))]
        if resource == RESOURCE_UNKNOWN:
            # What the sandbox cannot name, only a statement for any resource covers.
            if "*" not in patterns:
                return False
        elif not _matches_any(patterns, resource):
            return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, wanted in keys.items():
            if not _condition_holds(operator, key, _as_list(wanted), request.context):
                return False
    return True


def evaluate(policies: Iterable[dict], request: Request) -> Decision:
    """IAM's decision over identity policies (documents with ``Statement``) for every resource
    of ``request``: each must be allowed and none explicitly denied."""
    statements = [
        s for document in policies for s in _as_list(document.get("Statement")) if isinstance(s, dict)
    ]
    allowed_by: list[str] = []
    for resource in request.resources or (RESOURCE_UNKNOWN,):
        allowed = False
        for statement in statements:
            if not _statement_applies(statement, request, resource):
                continue
            if statement.get("Effect") == "Deny":
                return Decision(False, "explicit deny", (json.dumps(statement, sort_keys=True),))
            allowed = True
            allowed_by.append(statement.get("Sid") or json.dumps(statement, sort_keys=True)[:200])
        if not allowed:
            return Decision(False, "implicit deny")
    return Decision(True, "allow", tuple(allowed_by))


# -- a request's resources and context ------------------------------------------------------------

#: botocore's service names -> IAM's action prefixes, where they differ
_PREFIX = {"stepfunctions": "states", "service-quotas": "servicequotas"}
#: moto's service names -> botocore's
_SERVICE = {"awslambda": "lambda", "service-quotas": "servicequotas"}


def action_name(service: str, operation: str) -> str:
    service = _SERVICE.get(service, service)
    return f"{_PREFIX.get(service, service)}:{operation}"


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


@dataclass(frozen=True)
class Where:
    region: str
    account: str
    partition: str = "aws"

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account if account else ''}:{resource}"
        )


def _eks_resources(operation: str, params: dict, where: Where) -> list[str]:
    cluster = params.get("name") if operation in {"DescribeCluster"} else params.get("clusterName")
    cluster = cluster or params.get("name")
    if operation in {"DescribeAddonVersions", "DescribeAddonConfiguration", "ListClusters"}:
        return [RESOURCE_UNKNOWN]
    if not cluster:
        return [RESOURCE_UNKNOWN]
    addon_ops = {"DescribeAddon", "CreateAddon", "UpdateAddon", "DeleteAddon"}
    if operation in addon_ops and params.get("addonName"):
        if operation == "CreateAddon":
            return [where.arn("eks", f"cluster/{cluster}")]
        return [where.arn("eks", f"addon/{cluster}/{params['addonName']}/*")]
    principal = params.get("principalArn")
    access_entry_ops = {
        "DescribeAccessEntry",
        "UpdateAccessEntry",
        "DeleteAccessEntry",
        "AssociateAccessPolicy",
        "DisassociateAccessPolicy",
        "ListAssociatedAccessPolicies",
    }
    if operation in access_entry_ops and principal:
        # access-entry/CLUSTER/role/ACCOUNT/NAME/UUID (the UUID is not in the request: any)
        kind_account_name = principal.split(":", 5)[-1]  # "role/NAME" or "user/NAME"
        kind, _, name = kind_account_name.partition("/")
        account = principal.split(":")[4]
        return [where.arn("eks", f"access-entry/{cluster}/{kind}/{account}/{name.rsplit('/', 1)[-1]}/*")]
    if operation in {"DescribePodIdentityAssociation", "UpdatePodIdentityAssociation"} and params.get(
        "associationId"
    ):
        return [where.arn("eks", f"podidentityassociation/{cluster}/{params['associationId']}")]
    if operation == "DeletePodIdentityAssociation" and params.get("associationId"):
        return [where.arn("eks", f"podidentityassociation/{cluster}/{params['associationId']}")]
    return [where.arn("eks", f"cluster/{cluster}")]


def _state_machine_of_execution(execution_arn: str) -> str:
    # arn:aws:states:R:A:execution:NAME:EXEC -> arn:aws:states:R:A:stateMachine:NAME
    parts = execution_arn.split(":")
    if len(parts) >= 8 and parts[5] == "execution":
        return ":".join([*parts[:5], "stateMachine", parts[6]])
    return execution_arn


def _states_resources(operation: str, params: dict, where: Where, token_owner: Any) -> list[str]:
    if "executionArn" in params:
        return [params["executionArn"]]
    if "stateMachineArn" in params:
        return [params["stateMachineArn"]]
    if "taskToken" in params:
        owner = token_owner(params["taskToken"]) if token_owner else None
        return [owner or RESOURCE_ANY]
    return [RESOURCE_UNKNOWN]


def _dynamodb(operation: str, params: dict, where: Where, key_names: Any) -> tuple[list[str], list[str]]:
    """(resources, leading keys) of a DynamoDB request; leading keys from Key/Item, or from a
    Query's key condition on the partition key."""
    tables: list[tuple[str, dict]] = []
    if "TableName" in params:
        tables.append((params["TableName"], params))
    for item in params.get("TransactItems") or []:
        for body in item.values():
            tables.append((body["TableName"], body))
    for name, requests in (params.get("RequestItems") or {}).items():
        for request in requests if isinstance(requests, list) else [requests]:
            body = request.get("PutRequest", {}).get("Item") or request.get("DeleteRequest", {}).get("Key")
            tables.append((name, {"Key": body} if body else {}))
    resources, leading = [], []
    for table, body in tables:
        arn = where.arn("dynamodb", f"table/{table}")
        resources.append(f"{arn}/index/{body['IndexName']}" if body.get("IndexName") else arn)
        hash_key = key_names(table) if key_names else None
        if not hash_key:
            continue
        item = body.get("Key") or body.get("Item")
        if item and hash_key in item:
            leading.append(_first(list(item[hash_key].values())))
        elif body.get("KeyConditionExpression"):
            names = body.get("ExpressionAttributeNames") or {}
            values = body.get("ExpressionAttributeValues") or {}
            for name, value in re.findall(r"([#\w]+)\s*=\s*(:\w+)", body["KeyConditionExpression"]):
                if names.get(name, name) == hash_key and value in values:
                    leading.append(_first(list(values[value].values())))
    return sorted(set(resources)), leading


def request_context(
    service: str,
    operation: str,
    params: dict,
    where: Where,
    principal_arn: str,
    *,
    key_names: Any = None,
    token_owner: Any = None,
    role_arn_of: Any = None,
    secure_transport: bool = True,
) -> Request:
    """The IAM request for a call: its action, resources (ARNs named from ``params``) and the
    condition context keys."""
    service = _SERVICE.get(service, service)
    action = action_name(service, operation)
    context: dict[str, list[str]] = {
        "aws:PrincipalArn": [principal_arn],
        "aws:PrincipalAccount": [where.account],
        "aws:RequestedRegion": [where.region],
        "aws:SecureTransport": ["true" if secure_transport else "false"],
    }
    resources: list[str] = [RESOURCE_UNKNOWN]
    if service == "dynamodb":
        resources, leading = _dynamodb(operation, params, where, key_names)
        if leading:
            context["dynamodb:LeadingKeys"] = leading
    elif service == "stepfunctions":
        resources = _states_resources(operation, params, where, token_owner)
    elif service == "lambda":
        name = params.get("FunctionName") or ""
        resources = [name if name.startswith("arn:") else where.arn("lambda", f"function:{name}")]
    elif service == "eks":
        resources = _eks_resources(operation, params, where)
        if params.get("policyArn"):
            context["eks:policyArn"] = [params["policyArn"]]
        if params.get("principalArn"):
            context["eks:principalArn"] = [params["principalArn"]]
    elif service == "sagemaker" and params.get("ResourceArn"):
        resources = [params["ResourceArn"]]
    elif service == "servicequotas" and params.get("ServiceCode"):
        quota = f"/{params['QuotaCode']}" if params.get("QuotaCode") else "/*"
        resources = [where.arn("servicequotas", f"{params['ServiceCode']}{quota}")]
    elif service == "sagemaker":
        name = params.get("ClusterName")
        if name:
            arn = name if name.startswith("arn:") else where.arn("sagemaker", f"cluster/{name.lower()}")
            resources = [arn]
    elif service == "iam":
        role = params.get("RoleName")
        if role:
            # IAM authorises against the role's ARN, path included
            path = params.get("Path") or "/"
            known = role_arn_of(role) if role_arn_of and operation != "CreateRole" else None
            resources = [known or where.arn("iam", f"role{path}{role}", region=False)]
        elif params.get("PolicyArn") and operation in {"GetPolicy", "GetPolicyVersion"}:
            resources = [params["PolicyArn"]]
        if params.get("PolicyArn"):
            context["iam:PolicyARN"] = [params["PolicyArn"]]
        if params.get("PermissionsBoundary"):
            context["iam:PermissionsBoundary"] = [params["PermissionsBoundary"]]
    elif service == "events":
        bus = params.get("EventBusName") or params.get("Name")
        entries = params.get("Entries") or []
        if operation == "PutEvents":
            buses = {e.get("EventBusName") or "default" for e in entries} or {"default"}
            resources = sorted(
                b if b.startswith("arn:") else where.arn("events", f"event-bus/{b}") for b in buses
            )
            context["events:source"] = sorted({e.get("Source", "") for e in entries})
            context["events:detail-type"] = sorted({e.get("DetailType", "") for e in entries})
        elif params.get("Rule") or (operation.endswith("Rule") and params.get("Name")):
            rule = params.get("Rule") or params.get("Name")
            prefix = f"rule/{bus}/" if bus and bus != "default" and params.get("Rule") else "rule/"
            resources = [where.arn("events", f"{prefix}{rule}")]
        elif bus:
            resources = [bus if bus.startswith("arn:") else where.arn("events", f"event-bus/{bus}")]
    elif service == "sqs":
        url = params.get("QueueUrl")
        if url:
            name = urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
            resources = [where.arn("sqs", name)]
    elif service == "s3":
        bucket, key = params.get("Bucket"), params.get("Key")
        if bucket:
            resources = [f"arn:{where.partition}:s3:::{bucket}" + (f"/{key}" if key else "")]
    return Request(action, tuple(resources) or (RESOURCE_UNKNOWN,), context)


#: Calls no policy can deny (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html)
ALWAYS_ALLOWED = {"sts:GetCallerIdentity"}


def passed_roles(service: str, operation: str, params: dict) -> list[tuple[str, str]]:
    """(role ARN, service it is passed to) for each role a request hands to a service: IAM checks
    ``iam:PassRole`` on each, with ``iam:PassedToService``."""
    if service != "eks":
        return []
    passed = []
    associations = {"CreatePodIdentityAssociation", "UpdatePodIdentityAssociation"}
    if operation in associations and params.get("roleArn"):
        passed.append((params["roleArn"], "pods.eks.amazonaws.com"))
    if operation in {"CreateAddon", "UpdateAddon"}:
        for association in params.get("podIdentityAssociations") or []:
            passed.append((association["roleArn"], "pods.eks.amazonaws.com"))
        if params.get("serviceAccountRoleArn"):
            passed.append((params["serviceAccountRoleArn"], "eks.amazonaws.com"))
    return passed


def tag_on_create(service: str, operation: str, params: dict, request: Request) -> Request | None:
    """Tags given with a create call need the service's tagging permission as well, on what is
    created (EKS: ``eks:TagResource``; IAM roles: ``iam:TagRole``), as AWS checks them."""
    tags = params.get("tags") if service == "eks" else params.get("Tags") if service == "iam" else None
    if not tags or not operation.startswith("Create"):
        return None
    action = "eks:TagResource" if service == "eks" else "iam:TagRole"
    return Request(action, request.resources, request.context)


def pass_role_request(role_arn: str, passed_to: str, principal_arn: str, where: Where) -> Request:
    return Request(
        "iam:PassRole",
        (role_arn,),
        {
            "aws:PrincipalArn": [principal_arn],
            "aws:PrincipalAccount": [where.account],
            "iam:PassedToService": [passed_to],
        },
    )
