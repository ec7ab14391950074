"""Corpus manifests: a small JSON file that points at a corpus kept elsewhere and says what it is.

    {"clinrag_corpus": 1, "path": "../../shared/data/retrieval/medquad/corpus.jsonl",
     "type": "consumer-health", "source": "MedQuAD", "licence": "CC BY 4.0", "url": "...", "description": "..."}

A relative path is resolved from the manifest's folder. type/source/licence apply to every document;
url only to documents that name none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from indexer.load.common import Overrides
from rag.core.types import DocType, as_doc_type

MANIFEST_KEY = "clinrag_corpus"
MANIFEST_VERSION = 1
_ALLOWED_KEYS = frozenset({MANIFEST_KEY, "path", "type", "source", "licence", "license", "url", "description"})


class ManifestError(ValueError):
    """A manifest that cannot be followed; the message says which key to fix."""


@dataclass(frozen=True)
class CorpusManifest:
    target: Path
    overrides: Overrides
    description: str = ""


def is_manifest(data: object) -> bool:
    return isinstance(data, dict) and MANIFEST_KEY in data


def parse_manifest(manifest_path: Path, data: Mapping[str, object]) -> CorpusManifest:
    """Validate a manifest and resolve its target; raises ManifestError naming the key and the fix."""
    unknown = sorted(set(data) - _ALLOWED_KEYS)
    if unknown:
        raise ManifestError(f"unknown key(s) {', '.join(unknown)} in corpus manifest; allowed: {_allowed()}")
    if data.get(MANIFEST_KEY) != MANIFEST_VERSION:
        version = data.get(MANIFEST_KEY)
        fix = f'set "{MANIFEST_KEY}": {MANIFEST_VERSION}'
        raise ManifestError(f"unsupported corpus manifest version {version!r}: {fix}")
    raw_target = data.get("path")
    if not isinstance(raw_target, str) or not raw_target.strip():
        raise ManifestError('corpus manifest has no "path": name the corpus file or folder it describes')
    target = Path(os.path.expanduser(raw_target.strip()))
    if not target.is_absolute():
        target = Path(os.path.normpath(manifest_path.parent / target))
    overrides = Overrides(
        doc_type=_doc_type(data.get("type")),
        source=_optional(data, "source"),
        licence=_optional(data, "licence") or _optional(data, "license"),
        url=_optional(data, "url"),
    )
    return CorpusManifest(target=target, overrides=overrides, description=_optional(data, "description") or "")


def merge_overrides(caller: Overrides, manifest: Overrides) -> Overrides:
    """The caller's flags win over the manifest, which wins over the files."""
    return Overrides(
        doc_type=caller.doc_type or manifest.doc_type,
        source=caller.source or manifest.source,
        licence=caller.licence or manifest.licence,
        url=caller.url or manifest.url,
    )


def _doc_type(value: object) -> DocType | None:
    if value is None:
        return None
    try:
        return as_doc_type(value, where='corpus manifest "type"')
    except ValueError as exc:
        raise ManifestError(str(exc)) from exc


def _optional(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f'corpus manifest "{key}" must be a string, got {type(value).__name__}')
    return value.strip() or None


def _allowed() -> str:
    return ", ".join(sorted(_ALLOWED_KEYS))
