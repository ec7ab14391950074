"""Small file helpers shared across packages: a streamed SHA-256 and the UTC timestamp written into manifests."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from rag.core.errors import ConfigError


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_jsonl_objects(path: Path, what: str) -> list[dict[str, object]]:
    """The JSON objects of a JSONL file (blank lines skipped); ConfigError naming the file, line and fix."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{path}: cannot read {what} ({reason}); check the path") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {number} is not JSON ({exc.msg}); use the original {what}") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: line {number} is not a JSON object; use the original {what}")
        rows.append(row)
    return rows
