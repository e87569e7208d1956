"""The workflows' steps act only on the cluster their workflow locked (services/workflow_lock.py):
the pure check, the guard over a table, a handler on moto refusing another cluster before it
touches it, and the wiring (every step that takes a cluster is guarded, passed its lock by every
workflow, and allowed to read the lock)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from unit_support import CLUSTER_ARN

from hyperpod_control.exceptions import ClusterMismatchError, InvalidInputError, PermanentError
from hyperpod_control.models import install as install_models
from hyperpod_control.models import upgrade as upgrade_models
from hyperpod_control.models.install import ClusterRef, LockedClusterInput, WorkflowLock
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus
from hyperpod_control.services.install import decide_claim
from hyperpod_control.services.workflow_lock import (
    check_locked_cluster,
    guard_locked_cluster,
    locked_step_input,
)
from sandbox.template import load_template
from tests import fakes

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
OWNER = "arn:aws:states:us-west-2:123456789012:execution:hyperpod-control-plane-install-operator:run-1"
LOCKED = ClusterRef(cluster_name="abcdef123456", cluster_arn=CLUSTER_ARN, eks_cluster_name="eks-a")
OTHER_ARN = CLUSTER_ARN.replace("abcdef123456", "zzzzzz999999")
OTHER = ClusterRef(cluster_name="zzzzzz999999", cluster_arn=OTHER_ARN, eks_cluster_name="eks-b")
LOCK = WorkflowLock(owner=OWNER, cluster_arn=CLUSTER_ARN)


def operator(
    cluster: ClusterRef = LOCKED, owner: str | None = OWNER, eks: str | None = "eks-a"
) -> OperatorRecord:
    return OperatorRecord(
        cluster_arn=cluster.cluster_arn,
        cluster_name=cluster.cluster_name,
        eks_cluster_name=eks,
        mode=OperatorMode.ADDON,
        status=OperatorStatus.INSTALLING,
        lock_owner=owner,
    )


class FakeStore(fakes.FakeStore):
    """Counts its reads of a lock: the guard reads one, the one its lock names."""

    def __init__(self, *records: OperatorRecord) -> None:
        super().__init__(*records)
        self.reads: list[str] = []

    def get_operator(self, cluster_arn: str) -> OperatorRecord | None:
        self.reads.append(cluster_arn)
        return super().get_operator(cluster_arn)


# -- the check -----------------------------------------------------------------------------------


def test_the_locked_cluster_passes():
    check_locked_cluster(LOCKED, LOCK, operator())


def test_another_hyperpod_cluster_is_refused_naming_both():
    with pytest.raises(ClusterMismatchError) as refused:
        check_locked_cluster(OTHER, LOCK, operator())
    message = str(refused.value)
    assert message.startswith("cluster: this step was asked to act on HyperPod cluster zzzzzz999999")
    assert OTHER_ARN in message and "EKS cluster eks-b" in message
    assert (
        f"but workflow {OWNER} locked HyperPod cluster abcdef123456 ({CLUSTER_ARN}, EKS cluster eks-a)"
        in (message)
    )
    assert "nothing was changed" in message
    assert isinstance(refused.value, PermanentError), "a retry cannot help: no Retry, straight to Catch"


def test_the_locked_hyperpod_cluster_with_another_eks_cluster_is_refused():
    confused = LOCKED.model_copy(update={"eks_cluster_name": "eks-b"})
    with pytest.raises(ClusterMismatchError, match=r"EKS cluster eks-b\).*locked .*EKS cluster eks-a\)"):
        check_locked_cluster(confused, LOCK, operator())


def test_a_lock_with_no_eks_cluster_recorded_is_refused():
    with pytest.raises(ClusterMismatchError, match="EKS cluster not recorded"):
        check_locked_cluster(LOCKED, LOCK, operator(eks=None))


@pytest.mark.parametrize(
    ("locked", "holder"),
    [
        (None, "nobody"),  # no OPERATOR item at all
        (operator(owner=None), "nobody"),  # released
        (
            operator(owner="arn:aws:states:...:execution:x:run-2"),
            "workflow arn:aws:states:...:execution:x:run-2",
        ),
    ],
)
def test_a_step_whose_workflow_holds_no_lock_is_refused(locked, holder):
    with pytest.raises(ClusterMismatchError) as refused:
        check_locked_cluster(LOCKED, LOCK, locked)
    assert f"workflow {OWNER} holds no lock on {CLUSTER_ARN} (held by {holder})" in str(refused.value)


# -- the guard over the table --------------------------------------------------------------------


def _event(cluster: ClusterRef, lock: WorkflowLock | None = LOCK, **extra) -> dict:
    event = {"cluster": cluster.dump(), **extra}
    if lock is not None:
        event["lock"] = {**lock.dump(), "mode": "addon"}  # the workflow's $.lock, as it is
    return event


def test_the_guard_reads_the_lock_of_the_cluster_the_lock_names():
    store = FakeStore(operator(), operator(OTHER, owner=None, eks="eks-b"))
    request = locked_step_input(install_models.ClusterTaskInput, _event(LOCKED), store)
    assert request.cluster == LOCKED and store.reads == [CLUSTER_ARN]
    # the other cluster (not locked by anyone) is refused, after one read of the lock only
    store.reads.clear()
    with pytest.raises(ClusterMismatchError, match="asked to act on HyperPod cluster zzzzzz999999"):
        locked_step_input(install_models.AddonInput, _event(OTHER, addonVersion="v1.2.1-eksbuild.1"), store)
    assert store.reads == [CLUSTER_ARN]


def test_a_lock_naming_the_other_cluster_does_not_help_when_this_workflow_does_not_hold_it():
    store = FakeStore(operator(), operator(OTHER, owner="someone-else", eks="eks-b"))
    forged = WorkflowLock(owner=OWNER, cluster_arn=OTHER_ARN)
    with pytest.raises(ClusterMismatchError, match="held by workflow someone-else"):
        guard_locked_cluster(install_models.ClusterTaskInput(cluster=OTHER, lock=forged), store)


def test_a_step_input_without_its_lock_is_invalid_naming_the_field():
    with pytest.raises(InvalidInputError, match=r"^invalid ClusterActionInput: lock: Field required"):
        locked_step_input(install_models.ClusterActionInput, _event(LOCKED, lock=None), FakeStore(operator()))


# -- the lock names the EKS cluster ---------------------------------------------------------------


def test_acquiring_the_lock_records_the_eks_cluster():
    claimed = decide_claim(None, LOCKED, OWNER, OperatorMode.ADDON, "install")
    assert (claimed.lock_owner, claimed.eks_cluster_name) == (OWNER, "eks-a")


def test_acquiring_the_lock_for_another_eks_cluster_than_recorded_is_refused():
    existing = operator(owner=None).model_copy(update={"status": OperatorStatus.ACTIVE})
    confused = LOCKED.model_copy(update={"eks_cluster_name": "eks-b"})
    with pytest.raises(ClusterMismatchError, match="orchestrated by EKS cluster eks-a, not eks-b"):
        decide_claim(existing, confused, OWNER, OperatorMode.ADDON, "uninstall")


# -- a handler on moto ---------------------------------------------------------------------------


def test_a_handler_refuses_another_cluster_before_touching_it(
    moto_aws, app_loader, context, store, monkeypatch
):
    """CreateOrUpdateAddon asked to act on cluster B while its workflow locked A: refused before
    any EKS call; the lock's item is as it was."""
    from hyperpod_control.adapters.eks import EksAdapter

    calls: list[str] = []
    for method in ("describe_addon", "create_addon", "update_addon", "describe_cluster"):
        monkeypatch.setattr(EksAdapter, method, lambda self, *a, _m=method, **k: calls.append(_m))
    written = store.put(operator(), expected_version=None)
    app = app_loader("create_or_update_addon")

    with pytest.raises(ClusterMismatchError, match="asked to act on HyperPod cluster zzzzzz999999"):
        app.lambda_handler(_event(OTHER, addonVersion="v1.2.1-eksbuild.1"), context)

    assert calls == [], "nothing asked of EKS, let alone changed"
    assert store.get_operator(OTHER_ARN) is None and store.get_operator(CLUSTER_ARN) == written


# -- the wiring ----------------------------------------------------------------------------------

TEMPLATE = load_template(REPO / "template.yaml")
RESOURCES = TEMPLATE["Resources"]
MODELS = {
    name: cls
    for module in (install_models, upgrade_models)
    for name, cls in vars(module).items()
    if isinstance(cls, type) and issubclass(cls, LockedClusterInput) and cls is not LockedClusterInput
}


def _function_dir(logical: str) -> str:
    return RESOURCES[logical]["Properties"]["CodeUri"].strip("/").split("/")[-1]


def _guarded_dirs() -> set[str]:
    """Function directories whose handler reads a LockedClusterInput."""
    found = set()
    for app in sorted((REPO / "functions").glob("*/app.py")):
        parsed = re.findall(r"(parse_input|locked_step_input)\((\w+),", app.read_text())
        if any(model in MODELS for _, model in parsed):
            found.add(app.parent.name)
    return found


def test_every_step_that_takes_a_cluster_reads_it_through_the_guard():
    guarded = _guarded_dirs()
    assert {"cluster_access", "create_or_update_addon", "snapshot_jobs", "record_install"} <= guarded
    for name in guarded:
        source = (REPO / "functions" / name / "app.py").read_text()
        unguarded = [m for m in re.findall(r"parse_input\((\w+),", source) if m in MODELS]
        assert not unguarded, f"functions/{name}/app.py parses {unguarded} without locked_step_input"


def test_every_workflow_passes_its_lock_to_every_guarded_step():
    guarded = _guarded_dirs()
    checked = 0
    for logical, resource in RESOURCES.items():
        if resource["Type"] != "AWS::Serverless::StateMachine":
            continue
        props = resource["Properties"]
        functions = {
            placeholder: _function_dir(value["Fn::GetAtt"][0])
            for placeholder, value in (props.get("DefinitionSubstitutions") or {}).items()
            if isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][0] in RESOURCES
        }
        definition = json.loads((REPO / props["DefinitionUri"]).read_text())
        for name, state in definition["States"].items():
            placeholder = str((state.get("Parameters") or {}).get("FunctionName", "")).strip("${}")
            if functions.get(placeholder) in guarded:
                payload = state["Parameters"]["Payload"]
                assert payload.get("lock.$") == "$.lock", f"{logical}.{name} does not pass $.lock"
                checked += 1
    assert checked >= 25  # install 8, uninstall 7, upgrade 15


def _actions(statement: dict) -> list[str]:
    action = statement.get("Action", [])
    return [action] if isinstance(action, str) else list(action)


def test_every_guarded_function_may_read_the_lock():
    for logical, resource in RESOURCES.items():
        if resource["Type"] != "AWS::Serverless::Function" or _function_dir(logical) not in _guarded_dirs():
            continue
        statements = [s for p in resource["Properties"]["Policies"] for s in p.get("Statement", [])]
        reads = [
            s
            for s in statements
            if s.get("Effect") == "Allow"
            and "dynamodb:GetItem"
            in ([s["Action"]] if isinstance(s.get("Action"), str) else s.get("Action", []))
            and s.get("Resource") == {"Fn::GetAtt": ["ControlPlaneTable", "Arn"]}
        ]
        assert reads, f"{logical} cannot read the OPERATOR item its guard needs"
