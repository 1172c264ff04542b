"""An S3-compatible server on loopback for the tests (moto's, in a thread of the test process): a bucket per
test, and what the bucket holds read back with boto3, as any S3 client would see it."""

from __future__ import annotations

import logging
import uuid

import boto3
from moto.server import ThreadedMotoServer

# moto accepts any credentials; these stand for a deployment's own.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "auditsvc-test", "AWS_SECRET_ACCESS_KEY": "auditsvc-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> "S3Server":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)   # not a line per request
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.stop()

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"])

    def new_bucket(self) -> str:
        name = f"auditsvc-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
