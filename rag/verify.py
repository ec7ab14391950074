"""`clinrag index verify`: checksums, and chunks / vectors / FAISS / BM25 agreeing in count and ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.dense import faiss_ids, stored_ids
from rag.errors import BundleError
from rag.store import file_sha256, load_bundle, read_manifest


@dataclass(frozen=True)
class VerifyReport:
    directory: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "ok": self.ok, "problems": self.problems, "counts": self.counts}


def verify_bundle(directory: str | Path) -> VerifyReport:
    """Check every file against its manifest checksum, then the cross-file invariants."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems: list[str] = []
    for role, info in manifest.get("files", {}).items():
        path = directory / info["name"]
        if not path.is_file():
            problems.append(f"{role}: {path.name} is missing")
        elif file_sha256(path) != info.get("sha256"):
            problems.append(f"{role}: {path.name} does not match its checksum (modified or damaged)")
    if problems:
        return VerifyReport(str(directory), problems)
    try:
        bundle = load_bundle(directory, mmap=True)
    except BundleError as exc:
        return VerifyReport(str(directory), [str(exc)])

    active = bundle.active_chunks
    ids = [c.chunk_id for c in active]
    counts = {
        "documents": len(bundle.documents),
        "chunks": len(bundle.chunks),
        "active_chunks": len(active),
        "vectors": int(bundle.vectors.shape[0]),
        "faiss": int(bundle.dense_index.ntotal),
        "bm25": bundle.term_counts.n_docs,
    }
    for name in ("vectors", "faiss", "bm25"):
        if counts[name] != len(active):
            problems.append(f"{name} holds {counts[name]} rows but there are {len(active)} searchable chunks")
    if len(set(ids)) != len(ids):
        problems.append("chunk ids are not unique")
    expected = faiss_ids(ids)
    held = stored_ids(bundle.dense_index)
    if held.shape != expected.shape or not np.array_equal(np.sort(held), np.sort(expected)):
        problems.append("FAISS ids do not match the chunk ids")
    dim = manifest.get("embedder", {}).get("dim")
    if bundle.vectors.ndim != 2 or (len(active) and bundle.vectors.shape[1] != dim):
        problems.append(f"vectors have shape {bundle.vectors.shape}, manifest says dim {dim}")
    known_docs = {d.doc_id for d in bundle.documents}
    orphans = sorted({c.chunk.doc_id for c in bundle.chunks} - known_docs)
    if orphans:
        problems.append(f"{len(orphans)} chunks belong to unknown documents, e.g. {orphans[0]}")
    active_set = set(ids)
    dangling = [c.chunk.chunk_id for c in bundle.chunks if c.duplicate_of and c.duplicate_of not in active_set]
    if dangling:
        problems.append(f"{len(dangling)} duplicates point at chunks that are not searchable")
    stated = manifest.get("counts", {})
    for key in ("documents", "chunks", "active_chunks"):
        if key in stated and stated[key] != counts[key]:
            problems.append(f"manifest counts {stated[key]} {key}, files hold {counts[key]}")
    return VerifyReport(str(directory), problems, counts)
