"""``--context s3://BUCKET[/KEY]``: a tarball in S3 (or an S3-compatible store).

Kaniko's rules (pkg/buildcontext/s3.go and pkg/util/bucket, v1.24.0): the key
defaults to ``context.tar.gz``; ``S3_ENDPOINT`` names a custom endpoint and
``S3_FORCE_PATH_STYLE=true`` asks for path-style addressing there; everything else
(credentials, region, ``AWS_ENDPOINT_URL``) is the AWS SDK's own configuration,
which boto3 reads the same way. boto3 is an optional dependency (``pip install
pybuildless[s3]``), imported only when such a context is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from pybuildless.errors import UsageError

DEFAULT_KEY = "context.tar.gz"


def bucket_and_key(spec: str) -> tuple[str, str]:
    url = urlparse(spec)
    key = url.path.lstrip("/")
    if not url.netloc:
        raise UsageError(f"--context={spec}: no bucket name (expected s3://BUCKET/KEY)")
    return url.netloc, key or DEFAULT_KEY


def download(spec: str, dest: Path) -> None:
    """Download the object ``spec`` names into the file ``dest``."""
    bucket, key = bucket_and_key(spec)
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise UsageError(f"--context={spec}: s3:// contexts need boto3 (pip install 'pybuildless[s3]')") from None
    endpoint = os.environ.get("S3_ENDPOINT") or None
    style = "path" if endpoint and os.environ.get("S3_FORCE_PATH_STYLE", "").lower() == "true" else "auto"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": style}))
        client.download_file(bucket, key, str(dest))
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        raise UsageError(f"--context={spec}: cannot download s3://{bucket}/{key}: {code or e}") from None
    except BotoCoreError as e:
        raise UsageError(f"--context={spec}: cannot download s3://{bucket}/{key}: {e}") from None
