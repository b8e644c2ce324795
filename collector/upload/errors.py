"""The upload domain's errors, and the translation of boto3's errors into them.

Messages are one line fit for a log and ``/health``: they name the bucket and the S3 error
code, never a credential.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

REFUSED_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
PRECONDITION_FAILED_CODES = frozenset({"PreconditionFailed", "412"})


class UploadError(Exception):
    """An upload attempt failed; the file stays local and is retried."""


class StoreUnavailable(UploadError):
    """S3 could not be reached or failed on its side (network, timeout, 5xx): transient."""


class StoreRefused(UploadError):
    """S3 refused the request for a reason an operator must fix: missing bucket, refused or
    missing credentials, access denied. Retried all the same (the fix needs no restart)."""


class VerifyMismatch(UploadError):
    """The object in S3 does not match the local file (size or checksum)."""


class KeyTaken(UploadError):
    """A conditional put found the key taken (S3 412 PreconditionFailed): nothing was written.

    The uploader handles it by trying the file's next key; it is never a failed attempt.
    """


def _where(exc: BotoCoreError) -> str:
    """`` at scheme://host:port`` of the endpoint a botocore error names (no path, no userinfo)."""
    kwargs = getattr(exc, "kwargs", None) or {}
    url = kwargs.get("endpoint_url") or ""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname
        port = parts.port
    except ValueError:
        return ""
    if not host:
        return ""
    return f" at {parts.scheme}://{host}" + (f":{port}" if port else "")


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate(exc: BaseException, bucket: str) -> UploadError:
    """One of ours for a boto3/botocore error (``S3UploadFailedError`` is unwrapped)."""
    # boto3's upload_file re-raises a ClientError as S3UploadFailedError (text only).
    if not isinstance(exc, ClientError | BotoCoreError) and isinstance(
        exc.__context__, ClientError | BotoCoreError
    ):
        exc = exc.__context__
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreRefused(
            "no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_ACCESS_KEY/AWS_SECRET_KEY, a profile or an instance role)"
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in MISSING_BUCKET_CODES:
            return StoreRefused(f"S3 bucket '{bucket}' does not exist")
        if code in REFUSED_CREDENTIAL_CODES:
            return StoreRefused(f"S3 refused the credentials ({code}) for bucket '{bucket}'")
        if code in DENIED_CODES or status == 403:
            return StoreRefused(
                f"S3 denied access to bucket '{bucket}' ({code or status}): "
                "check the credentials and the bucket policy"
            )
        return StoreUnavailable(f"S3 error {code or status} on bucket '{bucket}'")
    if isinstance(exc, BotoCoreError):
        return StoreUnavailable(f"S3 unreachable{_where(exc)} ({type(exc).__name__})")
    return StoreUnavailable(f"S3 upload failed: {type(exc).__name__}: {exc}")
