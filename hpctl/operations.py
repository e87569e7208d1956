"""The on-call engineer's commands (docs/runbooks.md): the dead-letter queue and a stuck lock.

``hpctl dlq show`` lists what is in the events dead-letter queue and why each message is there;
``hpctl dlq redrive`` hands each message's event back to the function it was meant for (an
asynchronous invoke, as EventBridge and Lambda's retries would have) and deletes the message only
once Lambda accepted it. Events cannot go back through their bus: HyperPod's node-health events
have source ``aws.sagemaker``, which PutEvents refuses from anyone but AWS.

``hpctl unlock --cluster NAME`` releases a cluster's workflow lock whose execution has ended
(an install, uninstall or upgrade that was aborted or timed out: no Catch ran). A lock held by a
running execution is left alone unless ``--force``; stop that execution first.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from hpctl.stack import load_outputs

#: Which function an event's source and detail-type go to (template.yaml's rules), for the
#: messages Lambda itself dead-lettered: they name no target.
_FUNCTION_OUTPUT_BY_EVENT = {
    ("aws.sagemaker", "SageMaker HyperPod Cluster Node Health Event"): "NodeHealthFunctionName",
    ("hyperpod-control.agent", "HyperPod Agent State Change"): "JobEventsFunctionName",
    ("kubernetes-event-exporter", "Kubernetes Event"): "JobEventsFunctionName",
}
_RECONCILE_DETAIL_TYPE = "HyperPodPyTorchJob Change"


@dataclass
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]

    @property
    def event(self) -> dict[str, Any] | None:
        try:
            event = json.loads(self.body)
        except ValueError:
            return None
        return event if isinstance(event, dict) else None

    @property
    def error(self) -> str:
        a = self.attributes
        code = a.get("ERROR_CODE") or a.get("ErrorCode") or ""
        message = a.get("ERROR_MESSAGE") or a.get("ErrorMessage") or ""
        return f"{code}: {message}".strip(": ")

    def summary(self) -> dict[str, Any]:
        event = self.event or {}
        return {
            "messageId": self.message_id,
            "error": self.error,
            "rule": self.attributes.get("RULE_ARN"),
            "target": self.attributes.get("TARGET_ARN"),
            "event": {
                "id": event.get("id"),
                "source": event.get("source"),
                "detailType": event.get("detail-type"),
                "time": event.get("time"),
            },
        }


def _attributes(message: dict) -> dict[str, str]:
    return {k: v.get("StringValue", "") for k, v in (message.get("MessageAttributes") or {}).items()}


def read_dead_letters(sqs: Any, queue_url: str, limit: int, hold_seconds: int) -> list[DeadLetter]:
    """Up to ``limit`` messages, each hidden ``hold_seconds`` once received (visible again
    afterwards unless deleted). With 0 they stay visible, so a receive may return one already
    read: reading stops at a receive that brings nothing new."""
    letters: dict[str, DeadLetter] = {}
    while len(letters) < limit:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, limit - len(letters)),
            MessageAttributeNames=["All"],
            VisibilityTimeout=hold_seconds,
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages or all(m["MessageId"] in letters for m in messages):
            break
        for m in messages:
            letters[m["MessageId"]] = DeadLetter(
                m["MessageId"], m["ReceiptHandle"], m["Body"], _attributes(m)
            )
    return list(letters.values())


def dlq_show(
    stack: str, limit: int = 10, *, sqs: Any = None, out: TextIO = sys.stdout, as_json: bool = False
) -> list[dict]:
    """Print the dead letters (read without hiding them: nothing is removed, and a redrive right
    after sees them all)."""
    import boto3

    outputs = load_outputs(stack)
    sqs = sqs or boto3.client("sqs")
    url = outputs["EventsDeadLetterQueueUrl"]
    depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    letters = [d.summary() for d in read_dead_letters(sqs, url, limit, hold_seconds=0)]
    if as_json:
        print(json.dumps(letters, indent=2), file=out)
        return letters
    total = depth["Attributes"]["ApproximateNumberOfMessages"]
    print(f"{total} message(s) in {url}; showing {len(letters)}", file=out)
    for s in letters:
        event = s["event"]
        print(
            f"- {s['messageId']}  {event['source']} / {event['detailType']} (event {event['id']}, "
            f"{event['time']})\n    error: {s['error'] or 'not recorded'}"
            + (f"\n    target: {s['target']}" if s["target"] else ""),
            file=out,
        )
    return letters


def _target(letter: DeadLetter, outputs: Any) -> str | None:
    """The function the message's event was meant for: the target EventBridge recorded, else the
    one template.yaml's rules send it to."""
    if letter.attributes.get("TARGET_ARN"):
        return letter.attributes["TARGET_ARN"]
    event = letter.event or {}
    if event.get("detail-type") == _RECONCILE_DETAIL_TYPE:
        return outputs["ReconcileJobsFunctionName"]
    key = _FUNCTION_OUTPUT_BY_EVENT.get((event.get("source"), event.get("detail-type")))
    return outputs[key] if key else None


def dlq_redrive(
    stack: str, limit: int = 100, *, sqs: Any = None, lam: Any = None, out: TextIO = sys.stdout
) -> dict[str, int]:
    """Hand each dead letter's event to its function again; delete the messages Lambda accepted.
    Messages whose target cannot be told (or is not a function) stay, and are counted."""
    import boto3

    outputs = load_outputs(stack)
    sqs = sqs or boto3.client("sqs")
    lam = lam or boto3.client("lambda")
    url = outputs["EventsDeadLetterQueueUrl"]
    counts = {"redriven": 0, "left": 0}
    # Held 5 minutes: long enough for this run, after which what is left shows again.
    for letter in read_dead_letters(sqs, url, limit, hold_seconds=300):
        target = _target(letter, outputs)
        if target is None or (target.startswith("arn:") and ":lambda:" not in target):
            print(f"left {letter.message_id}: no function to hand it to ({target or 'unknown'})", file=out)
            counts["left"] += 1
            continue
        lam.invoke(FunctionName=target, InvocationType="Event", Payload=letter.body.encode())
        sqs.delete_message(QueueUrl=url, ReceiptHandle=letter.receipt_handle)
        print(f"redriven {letter.message_id} -> {target.rsplit(':', 1)[-1]}", file=out)
        counts["redriven"] += 1
    print(f"{counts['redriven']} redriven, {counts['left']} left in the queue", file=out)
    return counts


def unlock(
    stack: str,
    cluster: str,
    *,
    force: bool = False,
    sagemaker: Any = None,
    dynamodb: Any = None,
    sfn: Any = None,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Release ``cluster``'s workflow lock when the execution holding it has ended (``force``: even
    while it runs). An install it interrupted is marked FAILED, as a failed install's release does."""
    import boto3

    from hyperpod_control.adapters.sagemaker import SageMakerAdapter
    from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter
    from hyperpod_control.adapters.store import Store
    from hyperpod_control.exceptions import LockHeldError
    from hyperpod_control.services.install import decide_release, lock_holder_ended

    outputs = load_outputs(stack)
    arn = SageMakerAdapter(sagemaker or boto3.client("sagemaker")).describe_cluster(cluster)["ClusterArn"]
    store = Store(outputs["TableName"], client=dynamodb or boto3.client("dynamodb"))
    existing = store.get_operator(arn)
    if existing is None or not existing.lock_owner:
        print(f"cluster {cluster} is not locked", file=out)
        return {"cluster": cluster, "released": None}
    owner = existing.lock_owner
    ended = lock_holder_ended(owner, StepFunctionsAdapter(sfn or boto3.client("stepfunctions")))
    if ended is None and not force:
        raise LockHeldError(
            f"cluster '{cluster}' is locked by workflow {owner}, which is still running.",
            remedy="let it finish, or stop it (aws stepfunctions stop-execution --execution-arn "
            f"{owner}), then unlock; --force releases it anyway, with the workflow still acting.",
        )
    released = decide_release(existing, owner, succeeded=False)
    assert released is not None
    how = f"ended {ended}" if ended else "still running (--force)"
    released = released.model_copy(
        update={"reason": f"lock of workflow {owner} ({how}) released by hpctl unlock"}
    )
    store.put(released, expected_version=existing.version)
    print(
        f"released the lock of {cluster}, held by {owner} ({how}); status {released.status.value}", file=out
    )
    return {
        "cluster": cluster,
        "released": owner,
        "holder": ended or "RUNNING",
        "status": released.status.value,
    }
