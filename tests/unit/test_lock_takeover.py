"""A cluster lock whose execution ended without releasing it (aborted, timed out) is taken over by
the next workflow, which names the old execution (services/install/lock.py)."""

from __future__ import annotations

import pytest
from unit_support import CLUSTER_ARN

from hyperpod_control.exceptions import LockHeldError
from hyperpod_control.models.install import ClusterRef
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus
from hyperpod_control.services.install import decide_claim, lock_holder_ended
from tests.fakes import FakeSfn

pytestmark = pytest.mark.unit

CLUSTER = ClusterRef(cluster_name="abcdef123456", cluster_arn=CLUSTER_ARN, eks_cluster_name="eks-a")
OLD = "arn:aws:states:us-west-2:123456789012:execution:stack-install-operator:old"
NEW = "arn:aws:states:us-west-2:123456789012:execution:stack-install-operator:new"


def held(status: OperatorStatus = OperatorStatus.INSTALLING) -> OperatorRecord:
    return OperatorRecord(
        cluster_arn=CLUSTER_ARN,
        cluster_name="abcdef123456",
        eks_cluster_name="eks-a",
        mode=OperatorMode.ADDON,
        status=status,
        lock_owner=OLD,
        last_workflow=OLD,
    )


@pytest.mark.parametrize("ended", ["ABORTED", "TIMED_OUT", "FAILED", "SUCCEEDED", "DELETED"])
def test_a_lock_whose_execution_ended_is_taken_over_naming_it(ended):
    claimed = decide_claim(held(), CLUSTER, NEW, OperatorMode.ADDON, "install", holder_ended=ended)

    assert claimed.lock_owner == NEW and claimed.last_workflow == NEW
    assert claimed.status is OperatorStatus.INSTALLING
    assert claimed.reason is not None and OLD in claimed.reason and ended in claimed.reason


def test_a_lock_whose_execution_runs_is_still_refused():
    with pytest.raises(LockHeldError, match=OLD):
        decide_claim(held(), CLUSTER, NEW, OperatorMode.ADDON, "upgrade", holder_ended=None)


def test_the_holders_status_decides():
    sfn = FakeSfn({OLD: "RUNNING"})
    assert lock_holder_ended(OLD, sfn) is None
    sfn.statuses[OLD] = "ABORTED"
    assert lock_holder_ended(OLD, sfn) == "ABORTED"
    sfn.statuses[OLD] = None  # Step Functions no longer has it (90 days after it ended)
    assert lock_holder_ended(OLD, sfn) == "DELETED"
    # A holder that is no execution (a lock taken by hand, a test's name) is never asked about.
    assert lock_holder_ended("exec-1", sfn) is None and lock_holder_ended(None, sfn) is None
    assert sfn.asked == [OLD, OLD, OLD]
