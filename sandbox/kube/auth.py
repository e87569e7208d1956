"""Who is calling, and may they: EKS-style authentication and authorisation for the sandbox.

Authentication follows what EKS runs (aws-iam-authenticator): a bearer token
``k8s-aws-v1.<base64url of a presigned STS GetCallerIdentity URL>`` is checked for shape (STS host,
``Action=GetCallerIdentity``, ``x-k8s-aws-id`` among the signed headers, ``X-Amz-Date`` not older
than 15 minutes), then the presigned request is sent to STS (the sandbox's moto, through an injected
endpoint or HTTP function) with the ``x-k8s-aws-id`` header, and the ARN STS answers is
canonicalised (``assumed-role/ROLE/SESSION`` -> ``role/ROLE``). Difference from AWS: moto does not
check SigV4 signatures, so STS here vouches for any well-formed token, including one signed for
another cluster; ``install_presigned_sts_identity`` makes moto read the access key from the
presigned query (real STS does; moto only reads the Authorization header), so each caller is
identified by its own credentials.

Authorisation is an injectable ``Authorizer``. ``EksAccessEntryAuthorizer`` does what EKS does
with access entries: no entry for the principal -> 401 (EKS answers "Unauthorized": the principal
maps to no Kubernetes user); an entry -> the username and groups it names, allowed by an
associated access policy (``list_associated_access_policies``; cluster or namespace scope), else
by RBAC over the Roles/Bindings stored in the server (``rbac_allows``), else 403.
``StaticAuthorizer`` holds the same decision in a dict for tests. A static admin token (group
``system:masters``) serves kubectl and the sandbox itself.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sandbox.kube.store import ApiError

log = logging.getLogger("sandbox.kube.auth")
TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
PRESIGN_MAX_AGE_S = 15 * 60
#: How long the API server keeps a token's authenticated identity: kube-apiserver caches a token
#: webhook's (aws-iam-authenticator's) successful answers, ``--authentication-token-webhook-cache-ttl``
#: (2 minutes by default). Only the identity: every request is still authorised afresh.
TOKEN_CACHE_TTL_S = 2 * 60
_STS_HOST = re.compile(r"^sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")


@dataclass(frozen=True)
class CallerIdentity:
    arn: str  # as STS answered
    account: str
    user_id: str

    @property
    def principal_arn(self) -> str:
        return canonical_principal_arn(self.arn)

    @property
    def session_name(self) -> str:
        parts = self.arn.split(":", 5)[-1].split("/")
        return parts[2] if parts[0] == "assumed-role" and len(parts) > 2 else ""


@dataclass(frozen=True)
class RequestAttributes:
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str = ""
    resource: str = ""  # plural; "" for non-resource paths
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None
    path: str = ""


@dataclass(frozen=True)
class Principal:
    username: str
    groups: tuple[str, ...] = ()
    arn: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: when refused: 401 (no Kubernetes identity) or 403 (an identity without the permission)
    status: int = 403
    principal: Principal | None = None
    reason: str = ""


class Authorizer(Protocol):
    def decide(self, identity: CallerIdentity, attrs: RequestAttributes) -> Decision: ...


def canonical_principal_arn(arn: str) -> str:
    """The IAM principal an STS ARN stands for, as EKS access entries name it."""
    m = re.match(r"^arn:([^:]+):(iam|sts)::(\d{12}):(.+)$", arn)
    if not m:
        raise ValueError(f"not an IAM or STS ARN: {arn!r}")
    partition, _, account, resource = m.groups()
    kind, _, rest = resource.partition("/")
    if kind == "assumed-role":
        role = rest.split("/")[0]
        return f"arn:{partition}:iam::{account}:role/{role}"
    if kind == "role":
        return f"arn:{partition}:iam::{account}:role/{rest.rsplit('/', 1)[-1]}"
    if kind in ("user", "root", "federated-user"):
        # moto answers unknown keys with "sts::...:user/moto"; STS itself uses iam:: for users
        return f"arn:{partition}:{'sts' if kind == 'federated-user' else 'iam'}::{account}:{resource}"
    raise ValueError(f"unsupported principal type in {arn!r}")


# --- tokens ---------------------------------------------------------------------------------------


def make_eks_token(session: Any, cluster_name: str, region: str | None = None) -> str:
    """What ``aws eks get-token`` prints, made by the control plane's own token code, so the
    sandbox checks exactly the tokens production sends (STS endpoint: the session's, which
    honours AWS_ENDPOINT_URL)."""
    from hyperpod_control.adapters.kube import eks_token

    return eks_token(cluster_name, region or session.region_name or "us-west-2", session=session)


def _unauthorized(reason: str) -> ApiError:
    # the client is told only "Unauthorized", as by EKS; the reason goes to the server's log
    log.info("EKS token refused: %s", reason)
    return ApiError(401, "Unauthorized", "Unauthorized")


HttpGet = Callable[[str, dict[str, str]], tuple[int, bytes]]


def urllib_get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def requests_get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """For in-process moto: ``mock_aws`` intercepts ``requests`` to AWS hosts."""
    import requests

    resp = requests.get(url, headers=headers, timeout=10)
    return resp.status_code, resp.content


class EksTokenVerifier:
    """Checks ``k8s-aws-v1.`` tokens against STS, as the EKS authenticator does."""

    def __init__(
        self,
        cluster_name: str,
        sts_endpoint_url: str | None = None,
        http_get: HttpGet | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster_name = cluster_name
        self.sts_endpoint_url = sts_endpoint_url.rstrip("/") if sts_endpoint_url else None
        self.http_get = http_get or (urllib_get if sts_endpoint_url else requests_get)
        self.clock = clock
        self._known: dict[str, tuple[float, CallerIdentity]] = {}
        self._known_lock = threading.Lock()

    def _allowed_host(self, parsed: urllib.parse.ParseResult) -> bool:
        if parsed.scheme == "https" and _STS_HOST.match(parsed.hostname or ""):
            return True
        if self.sts_endpoint_url:
            own = urllib.parse.urlparse(self.sts_endpoint_url)
            return (parsed.scheme, parsed.netloc) == (own.scheme, own.netloc)
        return False

    def verify(self, token: str) -> CallerIdentity:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 8192:
            raise _unauthorized("not a k8s-aws-v1 token")
        raw = token[len(TOKEN_PREFIX) :]
        try:
            url = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise _unauthorized("token is not base64url") from exc
        parsed = urllib.parse.urlparse(url)
        if not self._allowed_host(parsed) or parsed.path not in ("", "/"):
            raise _unauthorized(
                f"unexpected STS endpoint in token: {parsed.scheme}://{parsed.netloc}{parsed.path}"
            )
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        if query.get("Action") != ["GetCallerIdentity"]:
            raise _unauthorized("token is not a GetCallerIdentity request")
        for key in query:
            if key not in ("Action", "Version") and not key.startswith("X-Amz-"):
                raise _unauthorized(f"non-allowlisted query parameter {key!r}")
        signed = (query.get("X-Amz-SignedHeaders") or [""])[0].lower().split(";")
        if CLUSTER_ID_HEADER not in signed:
            raise _unauthorized(f"client did not sign the {CLUSTER_ID_HEADER} header")
        try:
            date = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except (KeyError, ValueError) as exc:
            raise _unauthorized("missing or malformed X-Amz-Date") from exc
        if self.clock() - date.timestamp() > PRESIGN_MAX_AGE_S:
            raise _unauthorized("X-Amz-Date parameter is expired (15 minute expiration)")
        now = self.clock()
        with self._known_lock:
            known = self._known.get(token)
        if known is not None and now < known[0]:
            return known[1]
        target = url
        if self.sts_endpoint_url:
            target = f"{self.sts_endpoint_url}/?{parsed.query}"
        try:
            status, body = self.http_get(
                target, {CLUSTER_ID_HEADER: self.cluster_name, "Accept": "application/json"}
            )
        except OSError as exc:
            raise ApiError(500, "InternalError", f"error contacting STS: {exc}") from exc
        if status != 200:
            raise _unauthorized(f"STS answered {status}: {body[:200]!r}")
        identity = parse_caller_identity(body)
        with self._known_lock:
            self._known = {t: k for t, k in self._known.items() if now < k[0]}
            self._known[token] = (now + TOKEN_CACHE_TTL_S, identity)
        return identity


def parse_caller_identity(body: bytes) -> CallerIdentity:
    try:
        doc = json.loads(body)
        result = doc["GetCallerIdentityResponse"]["GetCallerIdentityResult"]
        return CallerIdentity(result["Arn"], result["Account"], result["UserId"])
    except (ValueError, KeyError, TypeError):
        pass
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise _unauthorized("STS answer is neither JSON nor XML") from exc
    values = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
    if not values.get("Arn"):
        raise _unauthorized("STS answer has no Arn")
    return CallerIdentity(values["Arn"], values.get("Account", ""), values.get("UserId", ""))


def install_presigned_sts_identity() -> None:
    """Make moto serve presigned (query-signed) STS requests the way AWS does.

    Real STS identifies a presigned URL's caller by its ``X-Amz-Credential``; moto reads only the
    Authorization header and otherwise answers as a default user, so every token would look like
    the same principal. And moto's server routes an unsigned ``GET /`` to S3 rather than to the
    service named in the query's credential scope. Idempotent; process-wide like every moto patch.
    """
    from moto.core.responses import BaseResponse

    original = BaseResponse.get_access_key
    if getattr(original, "_presigned_aware", False):
        return

    def get_access_key(self: Any) -> str:
        if "Authorization" not in self.headers:
            credential = (self.querystring.get("X-Amz-Credential") or [""])[0]
            if credential:
                return credential.split("/", 1)[0]
        return original(self)

    get_access_key._presigned_aware = True  # type: ignore[attr-defined]
    BaseResponse.get_access_key = get_access_key

    # moto's server picks the service from the Authorization header's credential scope and, for an
    # unsigned GET to "/", falls back to S3; a presigned URL carries that scope in its query
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    infer = DomainDispatcherApplication.infer_service_region_host

    def infer_service_region_host(self: Any, environ: dict[str, Any], path: str) -> str | None:
        if not environ.get("HTTP_AUTHORIZATION"):
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            credential = (query.get("X-Amz-Credential") or [""])[0]
            if credential.count("/") == 4:
                environ = {
                    **environ,
                    "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={credential}, "
                    "SignedHeaders=host, Signature=presigned",
                }
        return infer(self, environ, path)

    DomainDispatcherApplication.infer_service_region_host = infer_service_region_host


# --- authorisation ------------------------------------------------------------------------------

READ = {"get", "list", "watch"}
WRITE = READ | {"create", "update", "patch", "delete", "deletecollection"}


def access_policy_allows(policy_arn: str, scope: dict | None, attrs: RequestAttributes) -> bool:
    """Whether one EKS access policy association covers a request (an approximation of the
    ClusterRoles AWS maps them to: cluster-admin, admin, edit, view)."""
    name = policy_arn.rsplit("/", 1)[-1]
    scope = scope or {"type": "cluster"}
    if scope.get("type") == "namespace" and attrs.namespace not in (scope.get("namespaces") or []):
        return False
    if name == "AmazonEKSClusterAdminPolicy":
        return True
    namespaced_request = attrs.namespace is not None
    if not attrs.resource:  # discovery and other non-resource paths
        return True
    if name == "AmazonEKSAdminPolicy":
        return attrs.verb in WRITE if namespaced_request else attrs.verb in READ
    if name == "AmazonEKSEditPolicy":
        if attrs.group == "rbac.authorization.k8s.io":
            return attrs.verb in READ and namespaced_request
        return attrs.verb in (WRITE if namespaced_request else set()) or (
            attrs.resource == "namespaces" and attrs.verb in READ
        )
    if name == "AmazonEKSViewPolicy":
        if attrs.resource == "secrets":
            return False
        return attrs.verb in READ and (namespaced_request or attrs.resource == "namespaces")
    return False


def _rule_allows(rule: dict, attrs: RequestAttributes) -> bool:
    def has(values: Iterable[str] | None, value: str) -> bool:
        values = list(values or [])
        return "*" in values or value in values

    if not attrs.resource:
        return any(
            u == attrs.path or (u.endswith("*") and attrs.path.startswith(u[:-1]))
            for u in rule.get("nonResourceURLs") or []
        ) and has(rule.get("verbs"), attrs.verb)
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if not has(rule.get("verbs"), attrs.verb) or not has(rule.get("apiGroups"), attrs.group):
        return False
    resources = rule.get("resources") or []
    if not (has(resources, resource) or (attrs.subresource and f"{attrs.resource}/*" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or (attrs.name is not None and attrs.name in names)


def rbac_allows(
    principal: Principal,
    attrs: RequestAttributes,
    roles: dict[tuple[str, str], dict],
    cluster_roles: dict[str, dict],
    role_bindings: list[dict],
    cluster_role_bindings: list[dict],
) -> bool:
    """Upstream's RBAC authoriser over plain objects: ``roles`` by (namespace, name)."""

    def subject_matches(subjects: list[dict] | None) -> bool:
        for s in subjects or []:
            if s.get("kind") == "User" and s.get("name") == principal.username:
                return True
            if s.get("kind") == "Group" and s.get("name") in principal.groups:
                return True
        return False

    def rules_of(ref: dict, namespace: str | None) -> list[dict]:
        if ref.get("kind") == "ClusterRole":
            return (cluster_roles.get(ref.get("name", "")) or {}).get("rules") or []
        return (roles.get((namespace or "", ref.get("name", ""))) or {}).get("rules") or []

    for binding in cluster_role_bindings:
        if subject_matches(binding.get("subjects")) and any(
            _rule_allows(r, attrs) for r in rules_of(binding.get("roleRef") or {}, None)
        ):
            return True
    if attrs.namespace is None:
        return False
    for binding in role_bindings:
        ns = binding["metadata"].get("namespace")
        if ns != attrs.namespace or not subject_matches(binding.get("subjects")):
            continue
        if any(_rule_allows(r, attrs) for r in rules_of(binding.get("roleRef") or {}, ns)):
            return True
    return False


@dataclass
class AccessEntry:
    principal_arn: str
    username: str = ""
    kubernetes_groups: list[str] = field(default_factory=list)
    #: (policy ARN, accessScope) pairs
    policies: list[tuple[str, dict]] = field(default_factory=list)

    def principal(self, identity: CallerIdentity) -> Principal:
        username = self.username or identity.arn
        username = username.replace("{{SessionName}}", identity.session_name).replace(
            "{{AccountID}}", identity.account
        )
        return Principal(username, ("system:authenticated", *self.kubernetes_groups), identity.principal_arn)


class _EntryAuthorizer:
    """Shared decision: entry -> principal -> access policy -> RBAC (via ``rbac``) -> 403."""

    rbac: Callable[[Principal, RequestAttributes], bool] | None = None

    def entry(self, principal_arn: str) -> AccessEntry | None:
        raise NotImplementedError

    def decide(self, identity: CallerIdentity, attrs: RequestAttributes) -> Decision:
        decision = self._decide(identity, attrs)
        from sandbox.identity import record_kube

        record_kube(identity.arn, attrs, decision.allowed, decision.status)
        return decision

    def _decide(self, identity: CallerIdentity, attrs: RequestAttributes) -> Decision:
        try:
            arn = identity.principal_arn
        except ValueError as exc:
            return Decision(False, 401, reason=str(exc))
        entry = self.entry(arn)
        if entry is None:
            return Decision(False, 401, reason=f"no access entry for {arn}")
        principal = entry.principal(identity)
        if any(access_policy_allows(p, scope, attrs) for p, scope in entry.policies):
            return Decision(True, 200, principal)
        if self.rbac is not None and self.rbac(principal, attrs):
            return Decision(True, 200, principal)
        return Decision(False, 403, principal, reason="no access policy or RBAC rule allows it")


class StaticAuthorizer(_EntryAuthorizer):
    """Access entries held in memory: ``{principal_arn: AccessEntry}`` (for tests)."""

    def __init__(self, entries: dict[str, AccessEntry] | None = None) -> None:
        self.entries = dict(entries or {})

    def entry(self, principal_arn: str) -> AccessEntry | None:
        return self.entries.get(principal_arn)


class EksAccessEntryAuthorizer(_EntryAuthorizer):
    """Looks up the principal's access entry on the EKS cluster, as EKS does.

    ``eks`` is a boto3 EKS client (the sandbox's moto). Entries are cached for ``cache_ttl``
    seconds (EKS, too, takes a moment to apply a new entry); a missing entry is never cached, so a
    principal can be granted access and retry at once.
    """

    def __init__(self, eks: Any, cluster_name: str, cache_ttl: float = 2.0) -> None:
        self.eks = eks
        self.cluster_name = cluster_name
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, AccessEntry]] = {}
        self._lock = threading.Lock()

    def entry(self, principal_arn: str) -> AccessEntry | None:
        with self._lock:
            hit = self._cache.get(principal_arn)
            if hit and time.monotonic() - hit[0] < self.cache_ttl:
                return hit[1]
        from botocore.exceptions import ClientError

        try:
            arns: list[str] = []
            kwargs: dict[str, Any] = {"clusterName": self.cluster_name}
            while True:
                page = self.eks.list_access_entries(**kwargs)
                arns += page.get("accessEntries", [])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
            if principal_arn not in arns:
                return None
            desc = self.eks.describe_access_entry(clusterName=self.cluster_name, principalArn=principal_arn)
            raw = desc["accessEntry"]
            policies = []
            kwargs = {"clusterName": self.cluster_name, "principalArn": principal_arn}
            while True:
                page = self.eks.list_associated_access_policies(**kwargs)
                policies += [
                    (p["policyArn"], p.get("accessScope") or {})
                    for p in page.get("associatedAccessPolicies", [])
                ]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise ApiError(500, "InternalError", f"EKS access entry lookup failed: {exc}") from exc
        entry = AccessEntry(
            principal_arn, raw.get("username", ""), list(raw.get("kubernetesGroups") or []), policies
        )
        with self._lock:
            self._cache[principal_arn] = (time.monotonic(), entry)
        return entry
