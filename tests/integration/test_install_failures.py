"""install_operator on a fresh sandbox (see test_install_workflow.py): moto with the EKS/HyperPod
extensions, the sandbox Kubernetes API server (the add-on mirrored into it), the state machines of
template.yaml executed with their Lambdas in process."""

from __future__ import annotations

import json

import pytest
from install_support import (
    install_sandbox,
    operator_item,
    run_install,
)

from hyperpod_control.models.install import (
    ADDON_NAME,
)
from sandbox.aws_ext import api_faults, eks_addons

pytestmark = pytest.mark.integration


def test_throttling_is_retried_and_create_failed_ends_with_the_health_issue():
    with install_sandbox() as sb:
        # More throttles than the SDK's own five attempts: the state machine's Retry takes over.
        api_faults.inject("CreateAddon", times=6, error="throttle", service="eks")
        eks_addons.fail_next(
            ADDON_NAME,
            "CREATE_FAILED",
            [
                {
                    "code": "ConfigurationConflict",
                    "message": "Conflicts found when trying to apply.",
                    "resourceIds": [],
                }
            ],
        )
        failed = run_install(sb)
        assert not api_faults.pending()
        assert failed.status == "FAILED"
        assert failed.error == "AddonFailedError"
        assert "CREATE_FAILED" in failed.cause and "Conflicts found when trying to apply." in failed.cause
        history = [e for e in failed.history if e.get("type") == "TaskFailed"]
        assert any("ThrottledError" in json.dumps(e, default=str) for e in history)
        item = operator_item(sb)
        assert item["status"] == "FAILED" and item["lock_owner"] is None
        assert "DescribeAddon" in item["reason"]
