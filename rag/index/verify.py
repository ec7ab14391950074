"""`clinrag index verify`: checksums, and chunks / vectors / FAISS / BM25 agreeing in count and ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.core.errors import BundleError, BundleMismatchError
from rag.index.dense import faiss_ids, stored_ids
from rag.index.store import (
    LOAD_ATTEMPTS,
    MANIFEST_CHECKSUM,
    BundleContents,
    bundle_files,
    check_file,
    load_bundle,
    manifest_bytes,
    manifest_path,
    read_manifest,
)


@dataclass(frozen=True)
class VerifyReport:
    directory: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    generation: object = field(default=None, compare=False)  # the one checked; None when the manifest is unusable

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "ok": self.ok, "problems": self.problems, "counts": self.counts}


def verify_bundle(directory: str | Path, *, shard: bool = False) -> VerifyReport:
    """Check the manifest and every file against their checksums, then the cross-file invariants.

    A `shard` of a sharded index may hold duplicates collapsed into a chunk of another shard (checked there)."""
    directory = Path(directory)
    report, _ = _verify(directory, shard)
    for _ in range(LOAD_ATTEMPTS - 1):
        # Files deleted by a commit that happened during the check are not damage: check the new generation.
        if report.ok or report.generation is None or report.generation == _generation(directory):
            break
        report, _ = _verify(directory, shard)
    return report


def _generation(directory: Path) -> object:
    try:
        return read_manifest(directory).get("generation")
    except BundleError:
        return None


def _verify(directory: Path, shard: bool) -> tuple[VerifyReport, BundleContents | None]:
    """The report, and the bundle when it could be loaded (a sharded check goes on with it: no second load)."""
    try:
        manifest = read_manifest(directory)
    except BundleMismatchError:
        raise
    except BundleError as exc:
        if not manifest_path(directory).is_file():
            raise  # no index at all: a usage error, not damage to report
        return VerifyReport(str(directory), [str(exc)]), None
    generation = manifest.get("generation")
    problems = _manifest_problems(directory, manifest)
    try:
        files = bundle_files(directory, manifest)
    except BundleError as exc:
        return VerifyReport(str(directory), [*problems, str(exc)], generation=generation), None
    problems += [problem for role, (path, info) in files.items() if (problem := check_file(role, path, info))]
    if problems:
        return VerifyReport(str(directory), problems, generation=generation), None
    try:
        bundle = load_bundle(directory, mmap=True, check_checksums=False)  # just checked above
    except BundleError as exc:
        return VerifyReport(str(directory), [str(exc)], generation=generation), None
    if bundle.manifest.get("generation") != generation:
        return VerifyReport(str(directory), ["the index changed during the check"], generation=generation), None

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
    if dangling and not shard:
        problems.append(f"{len(dangling)} duplicates point at chunks that are not searchable")
    stated = manifest.get("counts", {})
    for key in ("documents", "chunks", "active_chunks"):
        if key in stated and stated[key] != counts[key]:
            problems.append(f"manifest counts {stated[key]} {key}, files hold {counts[key]}")
    return VerifyReport(str(directory), problems, counts, generation), bundle


def _manifest_problems(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """`read_manifest` has checked the checksum where there is one; verify also wants it there, and the file
    byte for byte as clinrag writes it, so that even a change that leaves the JSON equal is reported."""
    path = manifest_path(directory)
    if MANIFEST_CHECKSUM not in manifest:
        return [
            f"{path}: no {MANIFEST_CHECKSUM} (written by an older clinrag, or the key itself is damaged): "
            "rebuild the index with `clinrag index build` to protect the manifest"
        ]
    if path.read_bytes() != manifest_bytes(manifest):
        return [f"{path}: the file differs from the manifest clinrag wrote (edited or damaged): rebuild the index"]
    return []


def verify_sharded(directory: str | Path) -> VerifyReport:
    """Every shard as a bundle, the chain of checksums, and the corpus-wide BM25 statistics against the shards."""
    from rag.index.shards import load_sharded, read_sharded_manifest, shard_dirs, shard_problems
    from rag.index.sparse import CorpusStats

    directory = Path(directory)
    try:
        manifest = read_sharded_manifest(directory)
        problems = shard_problems(directory, manifest)
        folders = shard_dirs(directory, manifest)
    except BundleMismatchError:
        raise
    except BundleError as exc:
        return VerifyReport(str(directory), [str(exc)])
    counts: dict[str, int] = {"shards": len(folders)}
    bundles = []
    for folder in folders:
        if not (folder / "manifest.json").is_file():
            continue  # already reported as missing
        # A shard's folder is never rewritten (a new build writes a new generation), so one check is enough.
        report, bundle = _verify(folder, shard=True)
        problems += [f"{folder.name}: {p}" for p in report.problems]
        for key, value in report.counts.items():
            counts[key] = counts.get(key, 0) + value
        if bundle is not None:
            bundles.append(bundle)
    if problems:
        return VerifyReport(str(directory), problems, counts, manifest.get("generation"))
    try:
        index = load_sharded(directory)
    except BundleError as exc:
        return VerifyReport(str(directory), [str(exc)], counts, manifest.get("generation"))
    merged = CorpusStats.merge([CorpusStats.of(b.term_counts) for b in bundles])
    held = index.stats
    if (merged.n_docs, merged.total_length) != (held.n_docs, held.total_length) or dict(
        zip(merged.vocab, merged.df.tolist(), strict=True)
    ) != dict(zip(held.vocab, held.df.tolist(), strict=True)):
        problems.append("the corpus-wide BM25 statistics do not match the shards' term counts: rebuild the index")
    searchable = {c.chunk.chunk_id for b in bundles for c in b.chunks if c.duplicate_of is None}
    dangling = [
        c.chunk.chunk_id for b in bundles for c in b.chunks if c.duplicate_of and c.duplicate_of not in searchable
    ]
    if dangling:
        problems.append(f"{len(dangling)} duplicates point at chunks that are not searchable in any shard")
    unknown = sorted(set(index.absorbed) - searchable)
    if unknown:
        problems.append(f"absorbed.json names {len(unknown)} chunks no shard can return, e.g. {unknown[0]}")
    stated = manifest.get("counts", {}).get("active_chunks")
    if stated is not None and stated != counts.get("active_chunks"):
        problems.append(
            f"the sharded manifest counts {stated} searchable chunks, the shards hold {counts.get('active_chunks')}"
        )
    return VerifyReport(str(directory), problems, counts, manifest.get("generation"))
