"""One-line errors for storage locations, and whether AWS credentials are there at all.

Split from :mod:`fedtwin.pipelines.core.storage` (which re-exports :class:`StorageError`): pyarrow's
``OSError`` texts are long and name the SDK operation; users get the location, what is wrong and the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from fedtwin.pipelines.core.errors import FedtwinError

#: Where an S3-compatible endpoint may be named (the AWS SDKs' variables; pyarrow reads neither).
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StorageError(FedtwinError):
    """A location that cannot be used: unknown scheme, missing bucket, no credentials, unreadable object."""


def error_for(location: str | os.PathLike[str], err: BaseException, field: str = "") -> StorageError:
    """One line for an ``OSError`` from pyarrow or the local disk."""
    text = " ".join(str(err).split())
    where = f"{field} {location}" if field else str(location)
    bucket = urlparse(str(location)).netloc if "://" in str(location) else ""
    low = text.lower()
    if "no_such_bucket" in low or "nosuchbucket" in low or "bucket does not exist" in low:
        return StorageError(f"{where}: bucket '{bucket}' does not exist; create it or fix the {field or 'URI'}")
    if any(
        s in low
        for s in (
            "credentials",
            "access_denied",
            "accessdenied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "forbidden",
            "unauthorized",
            "403",
        )
    ):
        s3 = urlparse(str(location)).scheme.lower() == "s3"
        hint = (
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance profile"
            if s3
            else "set GOOGLE_APPLICATION_CREDENTIALS or use a VM service account"
        )
        return StorageError(f"{where}: access denied or no credentials ({_short(text)}); {hint}")
    if any(
        s in low
        for s in (
            "couldn't connect",
            "could not connect",
            "connection refused",
            "curl error",
            "resolve host",
            "timed out",
            "network",
        )
    ):
        endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), "")
        return StorageError(
            f"{where}: cannot reach the object store{' at ' + endpoint if endpoint else ''} "
            f"({_short(text)}); check AWS_ENDPOINT_URL and the network"
        )
    return StorageError(f"{where}: {_short(text)}")


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def errors_as_storage(location: str | os.PathLike[str], field: str = "") -> Iterator[None]:
    """Turn ``OSError`` raised inside the block into a one-line :class:`StorageError`."""
    try:
        yield
    except FileNotFoundError:  # callers map a missing object to their own message
        raise
    except OSError as err:
        raise error_for(location, err, field) from None


def has_aws_credentials() -> bool:
    """Whether the AWS credential chain has a source: keys in the environment, a web-identity or
    container token, a credentials/config file, or (probed for at most 1 s) an EC2 instance profile.

    Without one the AWS SDK would send unsigned requests, which S3 refuses only later, mid-run.
    """
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if any(
        env.get(v)
        for v in (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
    ):
        return True
    files = (
        env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
        env.get("AWS_CONFIG_FILE") or "~/.aws/config",
    )
    if any(Path(f).expanduser().is_file() for f in files):
        return True
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    import urllib.request

    request = urllib.request.Request(
        "http://169.254.169.254/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1.0):
            return True
    except OSError:
        return False
