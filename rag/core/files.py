"""Small file helpers shared across packages: a streamed SHA-256 and the UTC timestamp written into manifests."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
