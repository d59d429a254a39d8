"""The one factory of boto3 clients (S3, SNS, Cost Explorer): one timeout and retry configuration,
credentials, region and AWS_ENDPOINT_URL (moto in tests and the demo) read from boto3's own chain.

`aws_call` adds our own backoff on top for callers that can wait: boto's standard retry mode retries
throttling and 5xx a few times within a second or two; Cost Explorer's throttling lasts longer than
that, so a call that still fails is tried again after a longer pause (BACKOFF_SECONDS). Cost Explorer
bills every request (USD 0.01 each), so a client can count the HTTP requests it sends (RequestCounter),
retries included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

CONNECT_TIMEOUT_SECONDS = 5
# Bounds each socket read, not a whole call: a large S3 object still streams.
READ_TIMEOUT_SECONDS = 20
BOTO_MAX_ATTEMPTS = 3  # in all, the first included (boto's standard retry mode)
# Pauses between our own attempts after boto gave up on a throttled or failing call.
BACKOFF_SECONDS = (2.0, 8.0, 30.0)

RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
    }
)
ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "AuthorizationError",
        "OptInRequired",
    }
)
_NETWORK_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)

T = TypeVar("T")
sleep = time.sleep  # tests replace it


class AwsError(Exception):
    """An AWS call failed; the message is one line an operator can act on."""


class AwsUnavailable(AwsError):
    """AWS cannot be used at all: no credentials, access denied, the service not enabled."""


class RequestCounter:
    """Counts the HTTP requests a client sends (every attempt, as AWS bills them)."""

    def __init__(self) -> None:
        self.count = 0
        self.by_operation: dict[str, int] = {}

    def __call__(self, *, event_name: str, **kwargs: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        self.count += 1
        self.by_operation[operation] = self.by_operation.get(operation, 0) + 1


def aws_config(*, read_timeout: float = READ_TIMEOUT_SECONDS) -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": BOTO_MAX_ATTEMPTS},
    )


_loader_lock = threading.Lock()
_loader = None


def _fresh_session() -> boto3.session.Session:
    """A new session (credentials, region and AWS_ENDPOINT_URL read now), sharing one data loader:
    the services' JSON models are parsed once per process, not per client (0.17 s of CPU each)."""
    global _loader
    session = botocore.session.Session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=session)


def aws_client(
    service: str,
    *,
    region: str | None = None,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    counter: RequestCounter | None = None,
):
    """A boto3 client from a fresh session, so credentials and AWS_ENDPOINT_URL are read now (the
    default session would keep the first credentials for the process)."""
    config = aws_config(read_timeout=read_timeout)
    try:
        client = _fresh_session().client(service, region_name=region, config=config)
    except NoRegionError:
        raise AwsUnavailable(f"no AWS region for {service}: set AWS_DEFAULT_REGION (or AWS_REGION)") from None
    if counter is not None:
        client.meta.events.register("before-send", counter)
    return client


def topic_region(arn: str) -> str | None:
    """The region of an ARN (arn:aws:sns:<region>:<account>:<name>); None when it has none."""
    parts = arn.split(":")
    return parts[3] if len(parts) >= 6 and parts[3] else None


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "") or ""


def _describe(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    message = " ".join(str(error.get("Message", "")).split())[:300]
    return f"{error.get('Code') or exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode')}: {message}"


def _retryable(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return error_code(exc) in RETRYABLE_CODES or status >= 500


def aws_call(call: Callable[[], T], *, what: str, access_hint: str = "") -> T:
    """Run `call` (one boto3 request), pausing and trying again on throttling and transient errors.

    Raises AwsUnavailable for missing credentials or denied access (never retried), AwsError when
    the retries are spent; ClientErrors that are neither (validation, DataUnavailable) go up as they are.
    """
    attempts = len(BACKOFF_SECONDS) + 1
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            return call()
        except (NoCredentialsError, PartialCredentialsError):
            raise AwsUnavailable(
                "AWS credentials not found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or run with an instance role)"
            ) from None
        except ClientError as exc:
            if error_code(exc) in ACCESS_CODES:
                hint = f"; {access_hint}" if access_hint else ""
                raise AwsUnavailable(f"{what} refused ({_describe(exc)}){hint}") from None
            if not _retryable(exc):
                raise
            if last:
                raise AwsError(f"{what} failed after {attempts} tries ({_describe(exc)})") from None
        except _NETWORK_ERRORS as exc:
            if last:
                raise AwsError(f"{what}: AWS not reachable after {attempts} tries ({exc})") from None
        except BotoCoreError as exc:
            raise AwsError(f"{what}: {exc}") from None
        sleep(BACKOFF_SECONDS[attempt])
    raise AssertionError("unreachable")  # pragma: no cover
