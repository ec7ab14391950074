"""Source files as the manifest records them: path, content hash, what they yielded and what failed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.core.files import file_sha256
from rag.core.types import LoadFailure

# Bump whenever a loader or the chunker changes what it makes of the same file: bundles built by an older
# pipeline then re-chunk their sources on the next update (vectors of unchanged chunk text still come back
# from the bundle or the cache, so this costs little).
# 4: a recommendation keeps the grade written after it ("(**Strong For**)"); 5: Markdown table rows are units, so
# a chunk boundary falls between rows, never inside one.
TEXT_PIPELINE_VERSION = 5


@dataclass(frozen=True)
class SourceRecord:
    path: str  # resolved absolute path: the identity of a source across builds
    sha256: str
    size: int
    documents: int = 0
    chunks: int = 0
    failures: tuple[LoadFailure, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.size,
            "documents": self.documents,
            "chunks": self.chunks,
            "failures": [f.to_json() for f in self.failures],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceRecord:
        return cls(
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            size=int(data.get("bytes", 0)),
            documents=int(data.get("documents", 0)),
            chunks=int(data.get("chunks", 0)),
            failures=tuple(LoadFailure.from_json(f) for f in data.get("failures", [])),
        )


def source_key(path: Path) -> str:
    return str(path.expanduser().resolve())


def source_fingerprint(path: Path) -> str:
    """Content hash of a source; a corpus manifest's hash also covers the file it points at."""
    digest = file_sha256(path)
    target = corpus_manifest_target(path)
    if target is None:
        return digest
    inner = file_sha256(target) if target.is_file() else "missing"
    return hashlib.sha256(f"{digest}:{inner}".encode()).hexdigest()


def corpus_manifest_target(path: Path) -> Path | None:
    """The data file a `.json` corpus manifest names, or None when `path` is not a corpus manifest."""
    if path.suffix.lower() != ".json":
        return None
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
        if b'"clinrag_corpus"' not in head:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or "path" not in data:
        return None
    target = Path(str(data["path"])).expanduser()
    return target if target.is_absolute() else (path.parent / target)
