"""Pure decisions of the serverless supervisor: plain data in (the job, its JOB item, its pods,
their nodes, the agents' answers), plain data out. The steps in ``services/supervisor/`` read,
call these, and act; the remediation decisions are in ``services/remediation.py``.

- ``pods``: what the job's pods are (``build_pod``: labels, owner, the agent's environment, one
  pod per Schedulable node) and who may reach them (``build_network_policy``);
- ``calls``: what each ``/start`` says (``start_calls``), ranks and IP tables;
- ``rounds``: what a poll round says (``judge_round``): a pod lost or Terminating, a node
  NotReady, unreachable or marked by HyperPod (``node_trouble``), an agent FAULTED since the
  current start (``stale_status`` fences older reports by ``ipVersion``) or silent too many rounds
  (``silence``); and when the agents may start (``agents_ready``);
- ``status``: what cleanPodPolicy deletes (``clean_targets``), the job's conditions after an event
  (``conditions_after``) and the other status fields.

The package re-exports every public name of its modules, the import path its callers use.
"""

from __future__ import annotations

from hyperpod_control.services.supervision.calls import (
    MASTER_PORT,
    PER_AGENT_START_FIELDS,
    HeldTable,
    assign_ranks,
    held_table,
    ip_version_at,
    master_port,
    rank_ips_mode,
    spares_held,
    start_calls,
)
from hyperpod_control.services.supervision.pods import (
    AgentAssociation,
    agent_cidrs,
    avoid_nodes,
    build_network_policy,
    build_pod,
    decide_agent_association,
    instance_id,
    job_selector,
    network_policy_name,
    pod_failure,
    pod_index,
    pod_ip,
    pod_name,
    pod_phase,
    service_account,
)
from hyperpod_control.services.supervision.rounds import (
    NODE_TROUBLE_TAINTS,
    agents_ready,
    judge_round,
    misbehaviour,
    node_names,
    node_trouble,
    node_troubles,
    silence,
    stale_status,
    unreachable,
)
from hyperpod_control.services.supervision.status import (
    LISTED,
    clean_targets,
    conditions_after,
    listed,
    pod_refs,
    rank_list,
    rfc3339,
    status_master_port,
)

__all__ = [
    "LISTED",
    "MASTER_PORT",
    "NODE_TROUBLE_TAINTS",
    "PER_AGENT_START_FIELDS",
    "AgentAssociation",
    "HeldTable",
    "agent_cidrs",
    "agents_ready",
    "assign_ranks",
    "avoid_nodes",
    "build_network_policy",
    "build_pod",
    "clean_targets",
    "conditions_after",
    "decide_agent_association",
    "held_table",
    "instance_id",
    "ip_version_at",
    "job_selector",
    "judge_round",
    "listed",
    "master_port",
    "misbehaviour",
    "network_policy_name",
    "node_names",
    "node_trouble",
    "node_troubles",
    "pod_failure",
    "pod_index",
    "pod_ip",
    "pod_name",
    "pod_phase",
    "pod_refs",
    "rank_ips_mode",
    "rank_list",
    "rfc3339",
    "service_account",
    "silence",
    "spares_held",
    "stale_status",
    "start_calls",
    "status_master_port",
    "unreachable",
]
