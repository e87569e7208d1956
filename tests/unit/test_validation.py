"""parse_input: a bad task input names every bad field by its camelCase name and says how to fix it."""

from __future__ import annotations

import pytest

from hyperpod_control.exceptions import InvalidInputError, PermanentError
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.models.tasks import RecordFailureInput, RecordOperatorInput, RegisterClusterInput
from hyperpod_control.models.validation import parse_input

pytestmark = pytest.mark.unit


def test_good_input_parses_from_camel_case():
    request = parse_input(RegisterClusterInput, {"clusterName": "ml-cluster-1", "mode": "serverless"})

    assert request.cluster_name == "ml-cluster-1"
    assert request.mode is OperatorMode.SERVERLESS
    assert request.dump() == {"clusterName": "ml-cluster-1", "mode": "serverless"}


def test_bad_input_names_each_bad_field_by_alias_and_gives_a_fix():
    with pytest.raises(InvalidInputError) as info:
        parse_input(RegisterClusterInput, {"clusterName": "bad name!", "mode": "kubeflow"})

    err = info.value
    assert isinstance(err, PermanentError)  # Step Functions must not retry a bad request
    assert "RegisterClusterInput" in err.message
    assert "clusterName" in err.message
    assert "mode" in err.message
    assert "cluster_name" not in err.message  # users type camelCase; name the field as they typed it
    assert err.remedy
    text = str(err)
    assert "Fix:" in text
    # The fix carries each bad field's description.
    assert "HyperPod cluster's name" in text
    assert "training operator" in text


def test_missing_required_field_is_named():
    with pytest.raises(InvalidInputError) as info:
        parse_input(RegisterClusterInput, {"mode": "addon"})

    assert "clusterName" in info.value.message
    assert "mode" not in info.value.message.split(":", 1)[1]  # only the bad field is reported


def test_unknown_field_is_refused_and_named():
    with pytest.raises(InvalidInputError) as info:
        parse_input(RegisterClusterInput, {"clusterName": "c1", "mode": "addon", "clusterNmae": "typo"})

    assert "clusterNmae" in info.value.message


def test_input_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidInputError) as info:
        parse_input(RecordOperatorInput, ["not", "an", "object"])

    assert "RecordOperatorInput" in str(info.value)


def test_cluster_name_longer_than_63_characters_is_refused():
    with pytest.raises(InvalidInputError, match="clusterName"):
        parse_input(RegisterClusterInput, {"clusterName": "a" * 64, "mode": "addon"})
    assert parse_input(RegisterClusterInput, {"clusterName": "a" * 63, "mode": "addon"})


def test_record_failure_input_finds_the_cluster_arn_in_the_check_or_the_state():
    arn = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abc"
    from_check = parse_input(RecordFailureInput, {"step": "S", "state": {"check": {"clusterArn": arn}}})
    from_state = parse_input(RecordFailureInput, {"state": {"clusterArn": arn}, "extra": "ignored"})
    nothing = parse_input(RecordFailureInput, {"error": {"Error": "X"}})

    assert from_check.cluster_arn() == arn
    assert from_state.cluster_arn() == arn
    assert nothing.cluster_arn() is None
