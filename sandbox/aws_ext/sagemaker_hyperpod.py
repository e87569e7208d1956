"""SageMaker HyperPod clusters orchestrated by EKS: nodes with EC2 ids, reboot, replace, software update.

Replaces moto's cluster operations (create, describe, delete, list/describe nodes) and adds the
ones moto lacks (``batch_reboot_cluster_nodes``, ``batch_replace_cluster_nodes``,
``batch_delete_cluster_nodes``, ``update_cluster_software``). What a cluster keeps and returns:
``Orchestrator.Eks.ClusterArn`` (the EKS cluster must exist), ``NodeRecovery`` (default
Automatic), ``VpcConfig`` (required with EKS), tags, and a 12-character cluster id in its ARN
(``arn:aws:sagemaker:<region>:<account>:cluster/<id>``, as the API's ARN pattern says); every
call takes the name or the ARN.

Nodes: ``i-`` + 17 hex digits; one ENI each in the cluster's first subnet (so subnet addresses
and the account's ENI count go down as on AWS). Creation checks the "<type> for cluster usage"
and instance-count quotas synchronously (``ResourceLimitExceeded``); too few free addresses in
the subnet (81 per P5-class node with EKS, per the VPC prerequisites doc; 1 for other types, a
simplification) or too few ENIs left under ``L-DF5E4CA3`` make the cluster go Creating -> Failed
with a ``FailureMessage``, as provisioning failures do.

Node status over sandbox time: reboot Running -> Pending ("EC2 instance reboot in progress") ->
Running after ``delays.node_reboot``; replace: the old instance ShuttingDown, then gone, and a
new instance id Pending -> Running, ``delays.node_replace`` in all; software update: cluster
and nodes SystemUpdating -> InService/Running with the new image after
``delays.software_update``. Per-node failures as documented: ``InstanceIdNotFound``,
``InstanceIdInUse`` (a repair already in flight), ``InvalidInstanceStatus``. A missing cluster
or node is ``ResourceNotFound`` (HTTP 400), the error the SageMaker API reference documents for
DescribeCluster, DescribeClusterNode and the batch calls (moto answered ValidationException).
``fail_node()``
marks a node Failure (what the health agent's event reports) and, with NodeRecovery Automatic,
HyperPod's own repair follows.

Node listeners (``add_node_listener``): called with a ``NodeChange`` whenever a node's status
changes, a node appears or one is gone, at the moment the change is applied (in the request
that made it, or in the read that settled a timed transition), so a listener sees every state a
reboot or replacement goes through even when sandbox time jumps past several of them between
two reads. ``sandbox/kube/node_mirror.py`` uses it to take the Kubernetes Nodes through the same
states. ``current_nodes()`` settles a cluster and returns its nodes in the same form.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.session
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.core.utils import utcnow

from sandbox.aws_ext import quotas
from sandbox.aws_ext._base import (
    AwsError,
    Timed,
    delays,
    drop_none,
    paginate,
    random_chars,
    random_hex,
    transitions_lock,
)

log = logging.getLogger("sandbox.aws_ext.sagemaker_hyperpod")

EKS_ARN = re.compile(r"^arn:aws[a-z-]*:eks:[a-z0-9-]+:(\d{12}):cluster/([0-9A-Za-z][A-Za-z0-9_-]{0,99})$")
IP_HUNGRY = ("ml.p5.48xlarge", "ml.p5e.48xlarge", "ml.p5en.48xlarge")
IPS_PER_P5_NODE = 81
CURRENT_IMAGE = "2025.11.1"
NEWER_IMAGE = "2026.2.1"
HMA_FAULT = (
    "HyperPod Health Monitoring Agent (HMA) has detected fault type NvidiaErrorTerminate on this node and is "
    "unhealthy."
)
BUSY = ("Pending", "ShuttingDown", "SystemUpdating", "DeepHealthCheckInProgress")


def _enum(shape: str) -> list[str]:
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for(shape).enum)


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


@dataclass(frozen=True)
class NodeChange:
    """A node's status as it changed: ``status`` None means the instance is gone (replaced,
    deleted), ``previous`` None that it is new (or, from ``current_nodes``, a snapshot)."""

    account_id: str
    region: str
    cluster_name: str
    cluster_arn: str
    instance_id: str
    instance_type: str
    instance_group: str
    zone: str | None
    status: str | None
    previous: str | None


NodeListener = Callable[[NodeChange], None]
_listeners: list[NodeListener] = []
_listeners_lock = threading.Lock()


def add_node_listener(listener: NodeListener) -> None:
    """Call ``listener`` on every node change, in every account and region (filter on the change's
    fields). It runs in the thread that applied the change, often under the transitions lock:
    keep it short and do not call back into the emulation from it (queue the change instead)."""
    with _listeners_lock:
        _listeners.append(listener)


def remove_node_listener(listener: NodeListener) -> None:
    with _listeners_lock:
        if listener in _listeners:
            _listeners.remove(listener)


def _change(node: Node, status: str | None, previous: str | None) -> NodeChange:
    cluster = node.cluster
    subnet = node.eni.subnet if node.eni is not None else None
    return NodeChange(
        account_id=cluster.account_id,
        region=cluster.region,
        cluster_name=cluster.cluster_name,
        cluster_arn=cluster.arn,
        instance_id=node.instance_id,
        instance_type=node.group["InstanceType"],
        instance_group=node.group["InstanceGroupName"],
        zone=getattr(subnet, "availability_zone", None),
        status=status,
        previous=previous,
    )


def _notify(node: Node, status: str | None, previous: str | None) -> None:
    with _listeners_lock:
        listeners = list(_listeners)
    if not listeners:
        return
    change = _change(node, status, previous)
    for listener in listeners:
        try:
            listener(change)
        except Exception:  # a listener's bug must not fail the AWS call that changed the node
            log.exception("node listener %r failed on %s", listener, change)


class ClusterTable(dict):
    """moto's ``backend.clusters``, also found by cluster id (moto's tagging looks up ARN tails)."""

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key)
        if found is None:
            found = next((c for c in self.values() if c.arn.rsplit("/", 1)[-1] == key), None)
        return default if found is None else found


class Node(Timed):
    def __init__(self, cluster: HyperPodCluster, group: dict[str, Any], status: str = "Running") -> None:
        self.instance_id = "i-" + random_hex(17)
        self.logical_id = f"{group['InstanceGroupName']}-{random_chars(12)}"
        self.group = group
        self.cluster = cluster
        self.eni: Any = None
        self._status = status  # listeners hear of it when the cluster adds the node
        self.message = ""
        self.launch_time = utcnow()
        self.last_software_update: Any = None
        self.image = cluster.image

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        # every status change goes through here, so listeners see each one as it is applied
        previous, self._status = self._status, value
        if previous != value and self.cluster.nodes.get(self.instance_id) is self:
            _notify(self, value, previous)

    @property
    def image_status(self) -> str:
        newer = self.cluster.available_image
        return "UpdateAvailable" if newer and newer != self.image else "UpToDate"

    @property
    def private_ip(self) -> str | None:
        return self.eni.private_ip_address if self.eni is not None else None

    def summary(self) -> dict[str, Any]:
        return drop_none(
            {
                "InstanceGroupName": self.group["InstanceGroupName"],
                "InstanceId": self.instance_id,
                "InstanceType": self.group["InstanceType"],
                "LaunchTime": self.launch_time,
                "LastSoftwareUpdateTime": self.last_software_update,
                "InstanceStatus": drop_none({"Status": self.status, "Message": self.message or None}),
                "PrivateDnsHostname": self._hostname(),
                "CurrentImageReleaseVersion": self.image,
                "ImageVersionStatus": self.image_status,
            }
        )

    def _hostname(self) -> str | None:
        if not self.private_ip:
            return None
        return f"ip-{self.private_ip.replace('.', '-')}.{self.cluster.region}.compute.internal"

    def describe(self) -> dict[str, Any]:
        subnet = self.eni.subnet if self.eni is not None else None
        return drop_none(
            {
                **self.summary(),
                "NodeLogicalId": self.logical_id,
                "LifeCycleConfig": self.group.get("LifeCycleConfig"),
                "ThreadsPerCore": self.group.get("ThreadsPerCore", 1),
                "InstanceStorageConfigs": self.group.get("InstanceStorageConfigs"),
                "OverrideVpcConfig": self.group.get("OverrideVpcConfig"),
                "PrivatePrimaryIp": self.private_ip,
                "Placement": (
                    {
                        "AvailabilityZone": subnet.availability_zone,
                        "AvailabilityZoneId": subnet.availability_zone_id,
                    }
                    if subnet is not None
                    else None
                ),
                "DesiredImageReleaseVersion": self.cluster.image,
            }
        )


class HyperPodCluster(Timed):
    def __init__(self, backend: Any, params: dict[str, Any]) -> None:
        self.backend = backend
        self.region = backend.region_name
        self.account_id = backend.account_id
        self.cluster_name = params["ClusterName"]
        self.id = random_chars(12)
        self.arn = f"arn:aws:sagemaker:{self.region}:{self.account_id}:cluster/{self.id}"
        self.status = "Creating"
        self.failure_message = ""
        self.creation_time = utcnow()
        self.orchestrator = params.get("Orchestrator")
        self.node_recovery = params.get("NodeRecovery") or "Automatic"
        self.vpc_config = params.get("VpcConfig")
        self.tags = list(params.get("Tags") or [])
        self.image = CURRENT_IMAGE
        self.available_image: str | None = None
        self.groups: list[dict[str, Any]] = []
        for spec in params["InstanceGroups"]:
            group = {k: v for k, v in spec.items() if k not in ("InstanceCount", "MinInstanceCount")}
            group.setdefault("ThreadsPerCore", 1)  # AWS fills it in; moto raised KeyError without it
            group["TargetCount"] = spec["InstanceCount"]
            self.groups.append(group)
        self.nodes: dict[str, Node] = {}

    # -- reads settle everything first --

    def settle_all(self) -> None:
        with transitions_lock:
            self.settle()
            settled: set[str] = set()
            # A replacement adds a node while settling; it has transitions of its own to catch up on.
            while pending := [n for n in list(self.nodes.values()) if n.instance_id not in settled]:
                for node in pending:
                    settled.add(node.instance_id)
                    node.settle()

    def group_details(self) -> list[dict[str, Any]]:
        details = []
        for group in self.groups:
            current = sum(
                1
                for n in self.nodes.values()
                if n.group is group and n.status not in ("ShuttingDown", "NotFound")
            )
            details.append(
                drop_none(
                    {
                        **{k: v for k, v in group.items() if k != "TargetCount"},
                        "CurrentCount": current,
                        "TargetCount": group["TargetCount"],
                        "Status": "SystemUpdating" if self.status == "SystemUpdating" else "InService",
                        "CurrentImageReleaseVersion": self.image,
                        "DesiredImageReleaseVersion": self.image,
                        "ImageVersionStatus": "UpdateAvailable" if self.available_image else "UpToDate",
                    }
                )
            )
        return details

    def describe(self) -> dict[str, Any]:
        self.settle_all()
        return drop_none(
            {
                "ClusterArn": self.arn,
                "ClusterName": self.cluster_name,
                "ClusterStatus": self.status,
                "CreationTime": self.creation_time,
                "FailureMessage": self.failure_message,
                "InstanceGroups": self.group_details(),
                "VpcConfig": self.vpc_config,
                "Orchestrator": self.orchestrator,
                "NodeRecovery": self.node_recovery,
            }
        )

    def summary(self) -> dict[str, Any]:
        self.settle_all()
        return {
            "ClusterArn": self.arn,
            "ClusterName": self.cluster_name,
            "CreationTime": self.creation_time,
            "ClusterStatus": self.status,
        }

    # -- nodes --

    def add_node(self, group: dict[str, Any], status: str = "Running") -> Node:
        node = Node(self, group, status)
        node.eni = _create_eni(self, node)
        self.nodes[node.instance_id] = node
        _notify(node, node.status, None)
        return node

    def remove_node(self, node: Node) -> None:
        if self.nodes.pop(node.instance_id, None) is node:
            _notify(node, None, node.status)
        if node.eni is not None:
            _ec2(self).enis.pop(node.eni.id, None)
            node.eni = None

    def reboot(self, node: Node) -> None:
        node.status, node.message = "Pending", "EC2 instance reboot in progress"

        def up() -> None:
            node.status, node.message = "Running", ""

        node.schedule(delays.node_reboot, up)

    def replace(self, node: Node) -> None:
        node.status, node.message = "ShuttingDown", "Instance replacement started"

        def swap() -> None:
            self.remove_node(node)
            fresh = self.add_node(node.group, status="Pending")
            fresh.message = "Instance replacement in progress"

            def up() -> None:
                fresh.status, fresh.message = "Running", ""

            fresh.schedule(delays.node_replace / 2, up)

        node.schedule(delays.node_replace / 2, swap)


# -- EC2 side: the nodes' ENIs in the customer VPC ---------------------------------------------


def _ec2(cluster: HyperPodCluster) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[cluster.account_id][cluster.region]


def _subnet(cluster: HyperPodCluster) -> Any:
    subnets = (cluster.vpc_config or {}).get("Subnets") or []
    if not subnets:
        return None
    try:
        return _ec2(cluster).get_subnet(subnets[0])
    except Exception:  # a subnet id moto does not know: no ENI, as if outside the sandbox's VPCs
        return None


def _create_eni(cluster: HyperPodCluster, node: Node) -> Any:
    subnet = _subnet(cluster)
    if subnet is None:
        return None
    return _ec2(cluster).create_network_interface(
        subnet,
        None,
        group_ids=(cluster.vpc_config or {}).get("SecurityGroupIds"),
        description=f"SageMaker HyperPod {cluster.cluster_name} node {node.instance_id}",
        tags={"sagemaker:cluster-arn": cluster.arn},
    )


def _provisioning_problem(cluster: HyperPodCluster) -> str | None:
    """Why the nodes cannot get their network: too few addresses in the subnet or ENIs left."""
    subnet = _subnet(cluster)
    if subnet is None:
        return None
    counts = [(g["InstanceType"], g["TargetCount"]) for g in cluster.groups]
    needed = sum(n * (IPS_PER_P5_NODE if t in IP_HUNGRY else 1) for t, n in counts)
    free = subnet.available_ip_address_count
    if needed > free:
        return (
            f"Insufficient free IP addresses in subnet {subnet.id}: the cluster's instances need {needed}, "
            f"{free} are available. Use a subnet with a larger CIDR block."
        )
    eni_limit = quotas.value(
        "vpc", "Network interfaces per Region", region=cluster.region, account_id=cluster.account_id
    )
    in_use = len(_ec2(cluster).enis)
    nodes = sum(n for _, n in counts)
    if in_use + nodes > eni_limit:
        return (
            f"The account's network interface quota (L-DF5E4CA3) of {int(eni_limit)} is too low: {in_use} in "
            f"use, {nodes} more needed. Request an increase through Service Quotas."
        )
    return None


# -- lookups ------------------------------------------------------------------------------------


def _table(backend: Any) -> ClusterTable:
    if not isinstance(backend.clusters, ClusterTable):
        backend.clusters = ClusterTable(backend.clusters)
    return backend.clusters


def get_cluster(backend: Any, name_or_arn: str) -> HyperPodCluster:
    key = name_or_arn.rsplit("/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn
    cluster = _table(backend).get(key)
    if not isinstance(cluster, HyperPodCluster):
        raise AwsError("ResourceNotFound", f"Could not find cluster '{name_or_arn}'.")
    return cluster


def _check_quotas(backend: Any, cluster: HyperPodCluster) -> None:
    region, account = backend.region_name, backend.account_id
    existing = [
        c for c in _table(backend).values() if isinstance(c, HyperPodCluster) and c.status != "Failed"
    ]
    requested: dict[str, int] = {}
    for group in cluster.groups:
        requested[group["InstanceType"]] = requested.get(group["InstanceType"], 0) + group["TargetCount"]

    def limit_error(name: str, limit: float, used: int, delta: int) -> AwsError:
        return AwsError(
            "ResourceLimitExceeded",
            f"The account-level service limit '{name}' is {int(limit)} Instances, with current utilization "
            "of "
            f"{used} Instances and a request delta of {delta} Instances. Please use AWS Service Quotas to "
            "request "
            "an increase for this quota. If AWS Service Quotas is not available, contact AWS support to "
            "request an "
            "increase for this quota.",
        )

    for instance_type, delta in requested.items():
        name = quotas.usage_name(instance_type)
        limit = quotas.value("sagemaker", name, region=region, account_id=account)
        used = sum(g["TargetCount"] for c in existing for g in c.groups if g["InstanceType"] == instance_type)
        if used + delta > limit:
            raise limit_error(name, limit, used, delta)
    total = sum(requested.values())
    per_cluster = quotas.value("sagemaker", quotas.PER_CLUSTER_NAME, region=region, account_id=account)
    if total > per_cluster:
        raise limit_error(quotas.PER_CLUSTER_NAME, per_cluster, 0, total)
    used_total = sum(g["TargetCount"] for c in existing for g in c.groups)
    account_total = quotas.value("sagemaker", quotas.TOTAL_NAME, region=region, account_id=account)
    if used_total + total > account_total:
        raise limit_error(quotas.TOTAL_NAME, account_total, used_total, total)


def _validate_create(backend: Any, params: dict[str, Any]) -> None:
    name = params.get("ClusterName", "")
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name) or len(name) > 63:
        raise validation(
            f"ClusterName: {name!r} must match [a-zA-Z0-9](-*[a-zA-Z0-9])* and be 1-63 characters."
        )
    if isinstance(_table(backend).get(name), HyperPodCluster):
        raise AwsError(
            "ResourceInUse",
            f"Resource Already Exists: Cluster with name {name} already exists. Choose a different name.",
        )
    groups = params.get("InstanceGroups") or []
    if not groups:
        raise validation("InstanceGroups: at least one instance group is required.")
    types = _enum("ClusterInstanceType")
    seen = set()
    for index, group in enumerate(groups, start=1):
        if group["InstanceGroupName"] in seen:
            raise validation(
                f"InstanceGroups: instance group name {group['InstanceGroupName']} is used twice."
            )
        seen.add(group["InstanceGroupName"])
        if group.get("InstanceType") not in types:
            raise validation(
                f"Value '{group.get('InstanceType')}' at 'instanceGroups.{index}.member.instanceType' "
                "failed to "
                "satisfy constraint: Member must satisfy enum value set"
            )
    eks = (params.get("Orchestrator") or {}).get("Eks")
    if eks is not None:
        match = EKS_ARN.match(eks.get("ClusterArn", ""))
        if not match:
            raise validation(
                f"Orchestrator.Eks.ClusterArn: {eks.get('ClusterArn')!r} is not an EKS cluster ARN."
            )
        from moto.eks.models import eks_backends

        eks_cluster = eks_backends[backend.account_id][backend.region_name].clusters.get(match.group(2))
        if eks_cluster is None or eks_cluster.arn != eks["ClusterArn"]:
            raise validation(f"Orchestrator.Eks.ClusterArn: EKS cluster {eks['ClusterArn']} does not exist.")
        if not params.get("VpcConfig"):
            raise validation(
                "VpcConfig: a VPC configuration is required for clusters orchestrated by Amazon EKS."
            )


# -- Python API ---------------------------------------------------------------------------------


def backend_for(account_id: str = DEFAULT_ACCOUNT_ID, region: str = "us-west-2") -> Any:
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[account_id][region]


def fail_node(
    cluster_name: str,
    instance_id: str,
    message: str = HMA_FAULT,
    *,
    repair: str | None = "replace",
    region: str = "us-west-2",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """Mark a node Failure; with NodeRecovery Automatic, HyperPod then ``repair``s it (replace/reboot)."""
    cluster = get_cluster(backend_for(account_id, region), cluster_name)
    cluster.settle_all()
    node = cluster.nodes[instance_id]
    node.cancel_transitions()
    node.status, node.message = "Failure", message
    if cluster.node_recovery == "Automatic" and repair:
        (cluster.replace if repair == "replace" else cluster.reboot)(node)


def current_nodes(
    cluster_name: str, *, region: str = "us-west-2", account_id: str = DEFAULT_ACCOUNT_ID
) -> list[NodeChange]:
    """Settle the cluster's due transitions (listeners hear of them) and return its nodes as
    snapshots (``previous`` None). Reads moto's backend directly: unlike ``list_cluster_nodes``,
    it consumes no fault armed by ``aws_ext.api_faults`` for the code under test."""
    cluster = get_cluster(backend_for(account_id, region), cluster_name)
    with transitions_lock:
        cluster.settle_all()
        return [_change(node, node.status, None) for node in list(cluster.nodes.values())]


def offer_software_update(
    cluster_name: str,
    image: str = NEWER_IMAGE,
    *,
    region: str = "us-west-2",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """A newer HyperPod AMI is out: nodes report ImageVersionStatus UpdateAvailable until updated."""
    cluster = get_cluster(backend_for(account_id, region), cluster_name)
    cluster.available_image = image


# -- responses ----------------------------------------------------------------------------------


def create_cluster(self: Any) -> ActionResult:
    params = dict(self.params)
    backend = self.sagemaker_backend
    _validate_create(backend, params)
    cluster = HyperPodCluster(backend, params)
    _check_quotas(backend, cluster)
    _table(backend)[cluster.cluster_name] = cluster
    problem = _provisioning_problem(cluster)

    def provisioned() -> None:
        if problem:
            cluster.status, cluster.failure_message = "Failed", problem
            return
        for group in cluster.groups:
            for _ in range(group["TargetCount"]):
                cluster.add_node(group)
        cluster.status = "InService"

    cluster.schedule(delays.hyperpod_create, provisioned)
    return ActionResult({"ClusterArn": cluster.arn})


def describe_cluster(self: Any) -> ActionResult:
    return ActionResult(get_cluster(self.sagemaker_backend, self._get_param("ClusterName")).describe())


def delete_cluster(self: Any) -> ActionResult:
    cluster = get_cluster(self.sagemaker_backend, self._get_param("ClusterName"))
    for node in list(cluster.nodes.values()):
        cluster.remove_node(node)
    del _table(self.sagemaker_backend)[cluster.cluster_name]
    return ActionResult({"ClusterArn": cluster.arn})


def _node(cluster: HyperPodCluster, node_id: str | None, logical_id: str | None) -> Node | None:
    for node in cluster.nodes.values():
        if (node_id and node.instance_id == node_id) or (logical_id and node.logical_id == logical_id):
            return node
    return None


def describe_cluster_node(self: Any) -> ActionResult:
    cluster = get_cluster(self.sagemaker_backend, self._get_param("ClusterName"))
    cluster.settle_all()
    node_id, logical_id = self._get_param("NodeId"), self._get_param("NodeLogicalId")
    if not node_id and not logical_id:
        raise validation("NodeId: either NodeId or NodeLogicalId is required.")
    node = _node(cluster, node_id, logical_id)
    if node is None:
        raise AwsError(
            "ResourceNotFound",
            f"Could not find node '{node_id or logical_id}' in cluster '{cluster.cluster_name}'.",
        )
    return ActionResult({"NodeDetails": node.describe()})


def list_cluster_nodes(self: Any) -> ActionResult:
    cluster = get_cluster(self.sagemaker_backend, self._get_param("ClusterName"))
    cluster.settle_all()
    nodes = list(cluster.nodes.values())
    contains = self._get_param("InstanceGroupNameContains")
    if contains:
        nodes = [n for n in nodes if contains in n.group["InstanceGroupName"]]
    after, before = self._get_param("CreationTimeAfter"), self._get_param("CreationTimeBefore")
    if after:
        nodes = [n for n in nodes if n.launch_time > after]
    if before:
        nodes = [n for n in nodes if n.launch_time < before]
    if self._get_param("SortBy") == "NAME":
        nodes.sort(key=lambda n: n.group["InstanceGroupName"])
    else:
        nodes.sort(key=lambda n: n.launch_time)
    if self._get_param("SortOrder") == "Descending":
        nodes.reverse()
    page, token = paginate(nodes, self._get_param("MaxResults"), self._get_param("NextToken"))
    with_logical = bool(self._get_param("IncludeNodeLogicalIds"))
    summaries = [{**n.summary(), **({"NodeLogicalId": n.logical_id} if with_logical else {})} for n in page]
    return ActionResult(drop_none({"ClusterNodeSummaries": summaries, "NextToken": token}))


def _batch(self: Any, repair: str) -> ActionResult:
    cluster = get_cluster(self.sagemaker_backend, self._get_param("ClusterName"))
    cluster.settle_all()
    node_ids = self._get_param("NodeIds") or []
    logical_ids = self._get_param("NodeLogicalIds") or []
    if not node_ids and not logical_ids:
        raise validation("NodeIds: either NodeIds or NodeLogicalIds must be provided.")
    for field, values in (("nodeIds", node_ids), ("nodeLogicalIds", logical_ids)):
        if len(values) > 25:
            raise validation(
                f"1 validation error detected: Value '{values}' at '{field}' failed to satisfy constraint: "
                "Member must "
                "have length less than or equal to 25"
            )
    result: dict[str, list[Any]] = {
        "Successful": [],
        "Failed": [],
        "SuccessfulNodeLogicalIds": [],
        "FailedNodeLogicalIds": [],
    }
    for key, values, ok_key, failed_key in (
        ("NodeId", node_ids, "Successful", "Failed"),
        ("NodeLogicalId", logical_ids, "SuccessfulNodeLogicalIds", "FailedNodeLogicalIds"),
    ):
        for value in values:
            node = _node(
                cluster, value if key == "NodeId" else None, value if key == "NodeLogicalId" else None
            )
            error = None
            if node is None:
                error = (
                    "InstanceIdNotFound",
                    f"Node {value} was not found in cluster {cluster.cluster_name}.",
                )
            elif node.pending and node.status in ("Pending", "ShuttingDown"):
                error = ("InstanceIdInUse", f"Node {value} already has a reboot or replacement in progress.")
            elif node.status in BUSY:
                error = (
                    "InvalidInstanceStatus",
                    f"Node {value} is in status {node.status} and cannot be {repair}ed.",
                )
            if error:
                result[failed_key].append({key: value, "ErrorCode": error[0], "Message": error[1]})
                continue
            node.cancel_transitions()
            (cluster.reboot if repair == "reboot" else cluster.replace)(node)
            result[ok_key].append(value)
    return ActionResult({k: v for k, v in result.items() if v or k == "Failed"})


def batch_reboot_cluster_nodes(self: Any) -> ActionResult:
    return _batch(self, "reboot")


def batch_replace_cluster_nodes(self: Any) -> ActionResult:
    return _batch(self, "replace")


def batch_delete_cluster_nodes(self: Any) -> ActionResult:
    cluster = get_cluster(self.sagemaker_backend, self._get_param("ClusterName"))
    cluster.settle_all()
    successful, failed = [], []
    for node_id in self._get_param("NodeIds") or []:
        node = cluster.nodes.get(node_id)
        if node is None:
            failed.append(
                {"NodeId": node_id, "Code": "NodeIdNotFound", "Message": f"Node {node_id} was not found."}
            )
        elif node.status in BUSY:
            failed.append(
                {
                    "NodeId": node_id,
                    "Code": "InvalidNodeStatus",
                    "Message": f"Node {node_id} is {node.status}.",
                }
            )
        else:
            cluster.remove_node(node)
            node.group["TargetCount"] = max(0, node.group["TargetCount"] - 1)
            successful.append(node_id)
    return ActionResult(drop_none({"Successful": successful or None, "Failed": failed or None}))


def update_cluster_software(self: Any) -> ActionResult:
    cluster = get_cluster(self.sagemaker_backend, self._get_param("ClusterName"))
    cluster.settle_all()
    if cluster.status != "InService":
        raise AwsError(
            "ConflictException",
            f"Cluster {cluster.cluster_name} is in {cluster.status} status; software can be updated only "
            "when it is "
            "InService.",
        )
    groups = {g["InstanceGroupName"] for g in cluster.groups}
    for item in self._get_param("InstanceGroups") or []:
        if item["InstanceGroupName"] not in groups:
            raise validation(f"InstanceGroups: instance group {item['InstanceGroupName']} does not exist.")
    target = cluster.available_image or cluster.image
    cluster.status = "SystemUpdating"
    for node in cluster.nodes.values():
        if node.status == "Running":
            node.status = "SystemUpdating"

    def done() -> None:
        now = utcnow()
        cluster.image, cluster.available_image, cluster.status = target, None, "InService"
        for node in cluster.nodes.values():
            node.image, node.last_software_update = target, now
            if node.status == "SystemUpdating":
                node.status = "Running"

    cluster.schedule(delays.software_update, done)
    return ActionResult({"ClusterArn": cluster.arn})


def install() -> None:
    from moto.sagemaker.responses import SageMakerResponse

    for fn in (
        create_cluster,
        describe_cluster,
        delete_cluster,
        describe_cluster_node,
        list_cluster_nodes,
        batch_reboot_cluster_nodes,
        batch_replace_cluster_nodes,
        batch_delete_cluster_nodes,
        update_cluster_software,
    ):
        setattr(SageMakerResponse, fn.__name__, fn)
