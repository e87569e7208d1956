"""The snapshot bucket: job manifests kept while an upgrade deletes and resubmits them.

Manifests go to S3 (they can exceed DynamoDB's 400 KB item limit); DynamoDB items index them.
The client is built on first use, never at import time.
"""

from __future__ import annotations

import json
from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, map_client_error


class SnapshotBucket(AwsAdapter):
    service = "s3"

    def __init__(self, bucket: str, client: Any = None) -> None:
        super().__init__(client)
        self.bucket = bucket

    def put_json(self, key: str, body: dict[str, Any]) -> int:
        data = json.dumps(body, sort_keys=True).encode()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                ServerSideEncryption="AES256",
            )
        except Exception as exc:
            raise map_client_error(exc, resource=f"s3://{self.bucket}/{key}") from exc
        return len(data)

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            mapped = map_client_error(exc, resource=f"s3://{self.bucket}/{key}")
            if "NoSuchKey" in type(exc).__name__ or "NoSuchKey" in str(exc):
                return None
            raise mapped from exc
        return json.loads(found["Body"].read())

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise map_client_error(exc, resource=f"s3://{self.bucket}/{key}") from exc
