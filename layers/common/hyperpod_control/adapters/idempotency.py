"""Powertools idempotency over the project's single table, built on first use.

Powertools' ``DynamoDBPersistenceLayer`` creates its boto3 client in ``__init__``; building it at
import time would put a client into every cold start and stop tests from choosing the endpoint.
Records live in the same table under ``PK = IDEMPOTENCY#<function>`` and expire through the
table's TTL attribute (``expiration``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from hyperpod_control.settings import get_settings

TTL_ATTRIBUTE = "expiration"


def idempotent_handler(
    name: str, *, event_key_jmespath: str, expires_after_seconds: int = 24 * 3600
) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
    """Like Powertools' ``@idempotent``, with the persistence layer created lazily."""

    def decorate(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        wrapped: Callable[[Any, Any], Any] | None = None

        @functools.wraps(handler)
        def run(event: Any, context: Any) -> Any:
            nonlocal wrapped
            if wrapped is None:
                from aws_lambda_powertools.utilities.idempotency import (
                    DynamoDBPersistenceLayer,
                    IdempotencyConfig,
                    idempotent,
                )

                from hyperpod_control.adapters.aws import get_client

                store = DynamoDBPersistenceLayer(
                    table_name=get_settings().table_name,
                    key_attr="PK",
                    sort_key_attr="SK",
                    static_pk_value=f"IDEMPOTENCY#{name}",
                    expiry_attr=TTL_ATTRIBUTE,
                    boto3_client=get_client("dynamodb"),
                )
                config = IdempotencyConfig(
                    event_key_jmespath=event_key_jmespath,
                    expires_after_seconds=expires_after_seconds,
                    raise_on_no_idempotency_key=True,
                )
                wrapped = idempotent(persistence_store=store, config=config)(handler)
            return wrapped(event, context)

        return run

    return decorate
