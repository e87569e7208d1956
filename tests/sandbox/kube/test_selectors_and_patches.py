"""Selector parsing/matching and the three patch formats, as pure functions."""

from __future__ import annotations

import pytest

from sandbox.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.resources import POD_FIELDS
from sandbox.kube.selectors import (
    SelectorError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)

pytestmark = pytest.mark.unit

LABELS = {"app": "web", "tier": "front", "sagemaker.amazonaws.com/node-health-status": "Schedulable"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),  # != matches objects without the key, as upstream
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("app notin (db,cache)", True),
        ("missing notin (db)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app=web,tier in (front),!missing", True),
        ("app=web,tier=back", False),
        ("sagemaker.amazonaws.com/node-health-status=Schedulable", True),
    ],
)
def test_label_selector_matches_like_upstream(selector: str, expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), LABELS) is expected


@pytest.mark.parametrize("selector", ["app in ()", "a b", "app in (x", "=x", "app=in valid"])
def test_bad_label_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selectors_use_the_fields_a_kind_supports() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    assert fields_match(
        parse_field_selector("spec.nodeName=n1,status.phase!=Failed", POD_FIELDS), pod, POD_FIELDS
    )
    assert not fields_match(parse_field_selector("metadata.name==q", POD_FIELDS), pod, POD_FIELDS)
    assert fields_match(parse_field_selector("spec.hostNetwork=false", POD_FIELDS), pod, POD_FIELDS)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.image"):
        parse_field_selector("spec.image=x", POD_FIELDS)


def test_merge_patch_is_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}
    patched = merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]})
    assert patched == {"a": {"c": 2, "d": 3}, "l": [3], "keep": True}
    assert target["a"] == {"b": 1, "c": 2}  # input untouched


def test_json_patch_operations() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "spec": {"items": [1, 2]}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
            {"op": "replace", "path": "/spec/items/0", "value": 9},
            {"op": "add", "path": "/spec/items/-", "value": 3},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "copy", "from": "/spec/items", "path": "/spec/copy"},
            {"op": "test", "path": "/spec/items/2", "value": 3},
        ],
    )
    assert out == {"metadata": {"labels": {"b/c": "2"}}, "spec": {"items": [9, 2, 3], "copy": [9, 2, 3]}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/spec/items/0", "value": 5}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_strategic_merge_merges_lists_by_key_and_honours_directives() -> None:
    current = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [
                {"name": "main", "image": "v1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "s1"},
            ],
            "tolerations": [{"key": "x"}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "containers": [
                {"name": "main", "env": [{"name": "B", "value": "2"}]},
                {"name": "side", "$patch": "delete"},
                {"name": "new", "image": "n1"},
            ],
            "$setElementOrder/containers": [{"name": "new"}, {"name": "main"}],
            "tolerations": [{"key": "y"}],  # no merge key upstream: replaced
        },
    }
    out = strategic_merge_patch(current, patch)
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["new", "main"]
    assert out["spec"]["containers"][1]["image"] == "v1"
    assert out["spec"]["containers"][1]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert out["spec"]["tolerations"] == [{"key": "y"}]
    replaced = strategic_merge_patch(current, {"spec": {"$patch": "replace", "x": 1}})
    assert replaced["spec"] == {"x": 1}
    removed = strategic_merge_patch(current, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert removed["metadata"]["finalizers"] == []
