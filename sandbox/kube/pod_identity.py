"""EKS Pod Identity as a pod sees it: the webhook that mutates pods at admission, and the Pod
Identity Agent that answers them credentials (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html).

- **Webhook** (``PodIdentityWebhook``, a ``Store.admission`` hook): a pod created while its
  service account has an association in the cluster gets, in every container, the SDKs' container
  credential variables ``AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials``
  and ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`` (the projected service-account token, audience
  ``pods.eks.amazonaws.com``), with the ``eks-pod-identity-token`` volume and its mount, as EKS's
  webhook writes them into the pod spec. A pod created before the association, or whose account
  has none, gets nothing: its SDK finds no credentials (the host's are never inherited: the
  kubelet builds each container's environment from scratch).
- **Node** (``PodIdentityAgent.container_env``, called by the kubelet): pods run on the sandbox
  host, where neither 169.254.170.23 nor ``/var/run/secrets`` is the pod's own. The kubelet writes
  the pod's token (a random bearer token bound to the pod and its service account, standing for
  the signed JWT) into the pod's directory and points the two variables at that file and at the
  agent's loopback address (the SDKs accept loopback hosts in ``..._FULL_URI``).
- **Agent** (``PodIdentityAgent``, HTTP on 127.0.0.1): ``GET /v1/credentials`` with the token in
  ``Authorization``. As ``eks-auth:AssumeRoleForPodIdentity`` does, it finds the pod by its token,
  reads the association of its (namespace, service account) from the sandbox's EKS now, checks
  that the role exists and trusts ``pods.eks.amazonaws.com`` for ``sts:AssumeRole`` and
  ``sts:TagSession``, and answers credentials of the role from the sandbox's STS (AssumeRole,
  session ``eks-<cluster>-<pod>-<id>``): ``AccessKeyId``, ``SecretAccessKey``, ``Token``,
  ``AccountId``, ``Expiration``. moto then answers ``GetCallerIdentity`` for the key with
  ``assumed-role/<role>/<session>``: the pod is identified by its own credentials. A missing or
  unknown token is 401, an association or role that is gone 400, both with a JSON message.

Not modelled: session tags (``kubernetes-namespace``, ...), ``targetRoleArn`` (role chaining),
association policies, and the token's expiry (a pod's token lives as long as the pod).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox.kube.pod_identity")

EKS_CREDENTIALS_URI = "http://169.254.170.23/v1/credentials"
TOKEN_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
TOKEN_NAME = "eks-pod-identity-token"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_NAME}"
AUDIENCE = "pods.eks.amazonaws.com"
URI_ENV = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_ENV = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"


def service_account_of(pod: dict) -> str:
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


class PodIdentityWebhook:
    """EKS's Pod Identity mutating webhook over the sandbox's EKS cluster ``cluster_name``.

    ``eks`` is a boto3 EKS client of the sandbox's account; it lists the cluster's associations
    (as the webhook watches them)."""

    def __init__(self, eks: Any, cluster_name: str) -> None:
        self.eks = eks
        self.cluster_name = cluster_name

    def associated(self, namespace: str, service_account: str) -> bool:
        found = self.eks.list_pod_identity_associations(
            clusterName=self.cluster_name, namespace=namespace, serviceAccount=service_account
        )
        return bool(found.get("associations"))

    def admit(self, rt: Any, namespace: str | None, pod: dict) -> None:
        if rt.plural != "pods" or rt.group != "":
            return
        if not self.associated(namespace or "default", service_account_of(pod)):
            return
        spec = pod.setdefault("spec", {})
        volumes = spec.setdefault("volumes", [])
        if not any(v.get("name") == TOKEN_NAME for v in volumes):
            volumes.append(
                {
                    "name": TOKEN_NAME,
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": AUDIENCE,
                                    "expirationSeconds": 86400,
                                    "path": TOKEN_NAME,
                                }
                            }
                        ],
                    },
                }
            )
        for container in spec.get("containers") or []:
            env = container.setdefault("env", [])
            names = {e.get("name") for e in env}
            # what the pod's own spec sets wins, as with EKS's webhook
            if URI_ENV not in names:
                env.append({"name": URI_ENV, "value": EKS_CREDENTIALS_URI})
            if TOKEN_ENV not in names:
                env.append({"name": TOKEN_ENV, "value": TOKEN_FILE})
            mounts = container.setdefault("volumeMounts", [])
            if not any(m.get("name") == TOKEN_NAME for m in mounts):
                mounts.append({"name": TOKEN_NAME, "mountPath": TOKEN_DIR, "readOnly": True})


@dataclass(frozen=True)
class PodToken:
    namespace: str
    pod: str
    pod_uid: str
    service_account: str


class PodIdentityAgent:
    """The Pod Identity Agent of every sandbox node (they share the host), and the kubelet's side
    of the projected token."""

    def __init__(
        self,
        eks: Any,
        sts: Any,
        iam: Any,
        cluster_name: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.eks, self.sts, self.iam = eks, sts, iam
        self.cluster_name = cluster_name
        self._tokens: dict[str, PodToken] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self.credentials))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/credentials"

    def start(self) -> PodIdentityAgent:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pod-identity-agent", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the kubelet's side ----------------------------------------------------------------------

    def container_env(self, pod: dict, container: dict, env: dict[str, str], pod_dir: Path) -> None:
        """Point a container the webhook mutated at this agent and at its pod's token file (in
        ``pod_dir``); other containers are left as they are."""
        mounts = {m.get("name"): m.get("mountPath") for m in container.get("volumeMounts") or []}
        volumes = {v.get("name") for v in (pod.get("spec") or {}).get("volumes") or []}
        if TOKEN_NAME not in volumes or mounts.get(TOKEN_NAME) is None:
            return
        token_path = pod_dir / TOKEN_NAME
        if not token_path.exists():
            meta = pod["metadata"]
            owner = PodToken(meta["namespace"], meta["name"], meta["uid"], service_account_of(pod))
            token = self.issue(owner)
            token_path.write_text(token)
            token_path.chmod(0o400)
        mount = mounts[TOKEN_NAME].rstrip("/")
        if env.get(TOKEN_ENV, "").startswith(mount + "/"):
            env[TOKEN_ENV] = str(pod_dir / env[TOKEN_ENV][len(mount) + 1 :])
        if env.get(URI_ENV) == EKS_CREDENTIALS_URI:
            env[URI_ENV] = self.url

    def issue(self, owner: PodToken) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = owner
        return token

    def revoke_pod(self, pod_uid: str) -> None:
        with self._lock:
            for token in [t for t, owner in self._tokens.items() if owner.pod_uid == pod_uid]:
                del self._tokens[token]

    # -- the agent -----------------------------------------------------------------------------------

    def credentials(self, authorization: str) -> tuple[int, dict]:
        with self._lock:
            owner = self._tokens.get(authorization.strip())
        if owner is None:
            return 401, {"message": "Unauthorized: the service account token is missing or not valid"}
        found = (
            self.eks.list_pod_identity_associations(
                clusterName=self.cluster_name, namespace=owner.namespace, serviceAccount=owner.service_account
            ).get("associations")
            or []
        )
        if not found:
            return 400, {
                "message": f"no Pod Identity association for {owner.namespace}/{owner.service_account} "
                f"in cluster {self.cluster_name}"
            }
        association = self.eks.describe_pod_identity_association(
            clusterName=self.cluster_name, associationId=found[0]["associationId"]
        )["association"]
        role_arn = association["roleArn"]
        problem = self._role_problem(role_arn)
        if problem:
            return 400, {"message": f"AccessDenied: cannot assume {role_arn}: {problem}"}
        session = f"eks-{self.cluster_name}-{owner.pod}-{owner.pod_uid[:8]}"[:64]
        creds = self.sts.assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]
        return 200, {
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["SessionToken"],
            "AccountId": role_arn.split(":")[4],
            "Expiration": creds["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _role_problem(self, role_arn: str) -> str | None:
        from hyperpod_control.services.install import trust_problems

        try:
            role = self.iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]
        except self.iam.exceptions.NoSuchEntityException:
            return "the role does not exist"
        if role["Arn"] != role_arn:
            return f"the role is {role['Arn']}"
        document = role["AssumeRolePolicyDocument"]
        if isinstance(document, str):
            import urllib.parse

            document = json.loads(urllib.parse.unquote(document))
        problems = trust_problems(document)
        return "; ".join(problems) or None


def _handler(answer: Callable[[str], tuple[int, dict]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/v1/credentials":
                code, body = 404, {"message": f"no such path {self.path}"}
            else:
                try:
                    code, body = answer(self.headers.get("Authorization") or "")
                except Exception as exc:  # the agent answers, it never hangs the SDK
                    log.exception("pod identity agent failed")
                    code, body = 500, {"message": str(exc)}
            data = json.dumps(body).encode()
            with contextlib.suppress(OSError):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("pod identity agent: " + format, *args)

    return Handler
