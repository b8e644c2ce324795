"""A real S3-compatible server for the upload tests: moto's server on 127.0.0.1.

- :class:`S3Server`: start on port 0, stop and start again on the same port (an outage),
  turn request authentication on (refused credentials), make buckets, read objects;
- :func:`fake_aws_env`: fake credentials and no AWS config files, instance metadata off, so
  nothing reaches a real AWS account or the internet.

moto keeps its state per process, so objects survive a stop/start; each test uses its own
bucket (:func:`unique_bucket`).
"""

from __future__ import annotations

import logging
import urllib.request
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

FAKE_KEY_ID = "AKIATESTFAKEKEYID000"
FAKE_SECRET = "fake-secret-never-shown-0123456789"
REGION = "us-east-1"

# Every variable that could point boto3 at real AWS settings or credentials.
_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials via the standard variables; no config files, no metadata service."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def unique_bucket() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


class S3Server:
    """moto's S3 on 127.0.0.1; the port is chosen at the first start and kept."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    @property
    def endpoint_url(self) -> str:
        assert self.port, "start() first"
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        assert self._server is None
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        """A boto3 client for the test's own checks (short timeouts, no retries)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            config=Config(
                connect_timeout=5,
                read_timeout=10,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or unique_bucket()
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        response = self.client().list_objects_v2(Bucket=bucket)
        return sorted(obj["Key"] for obj in response.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def set_auth(self, enforced: bool) -> None:
        """Enforce request authentication (unknown access keys are refused) or not."""
        count = b"0" if enforced else b"inf"
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=count,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
