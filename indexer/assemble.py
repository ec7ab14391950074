"""Decide what the next generation holds: which sources, documents and chunks, and which are duplicates."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from indexer.chunk import chunk_documents
from indexer.dedup import find_duplicates
from indexer.load import iter_source_files, load_source
from indexer.sources import TEXT_PIPELINE_VERSION, SourceRecord, source_fingerprint, source_key
from rag.core.config import IndexSettings
from rag.core.errors import ConfigError, ModelLoadError
from rag.core.types import Chunk, LoadFailure
from rag.index.store import BundleContents, DocumentRecord, StoredChunk
from rag.models.embed import Embedder


@dataclass(frozen=True)
class SourceOutcome:
    record: SourceRecord
    loaded: bool  # False: reused unchanged from the previous generation


LoadedSource = tuple[SourceOutcome, list[DocumentRecord], list[Chunk]]
# Loads and chunks (source key, path) pairs, results in the same order: the Ray build runs `load_one` on workers.
SourceLoader = Callable[[list[tuple[str, Path]]], list[LoadedSource]]


@dataclass
class Corpus:
    sources: list[SourceOutcome] = field(default_factory=list)
    documents: list[DocumentRecord] = field(default_factory=list)
    chunks: list[StoredChunk] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)
    sources_removed: int = 0
    changed: bool = False
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Previous:
    """The old generation grouped by source, for reuse."""

    records: dict[str, SourceRecord] = field(default_factory=dict)
    documents: dict[str, list[DocumentRecord]] = field(default_factory=dict)
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    reusable_chunks: bool = False

    @classmethod
    def of(cls, existing: BundleContents | None, settings: IndexSettings) -> _Previous:
        prev = cls()
        if existing is None:
            return prev
        same_chunker = existing.manifest.get("settings", {}).get("chunker") == settings.chunker.model_dump(mode="json")
        same_pipeline = existing.manifest.get("text_pipeline_version") == TEXT_PIPELINE_VERSION
        prev.reusable_chunks = same_chunker and same_pipeline
        prev.records = {r["path"]: SourceRecord.from_json(r) for r in existing.manifest.get("sources", [])}
        doc_source = {}
        for doc in existing.documents:
            prev.documents.setdefault(doc.source_path, []).append(doc)
            doc_source[doc.doc_id] = doc.source_path
        for stored in existing.chunks:
            prev.chunks.setdefault(doc_source.get(stored.chunk.doc_id, ""), []).append(stored.chunk)
        return prev


def assemble_corpus(
    paths: Sequence[Path],
    existing: BundleContents | None,
    settings: IndexSettings,
    embedder: Embedder,
    *,
    keep_existing: bool,
    remove_docs: set[str],
    remove_sources: set[str],
    progress: bool,
    loader: SourceLoader | None = None,
    forget_docs: frozenset[str] = frozenset(),
) -> Corpus:
    """`loader` (only for a build with no previous generation) loads every source, e.g. across a Ray cluster.
    `forget_docs`: documents removed earlier, left out again wherever they still are (no error where they are not)."""
    started = time.perf_counter()
    prev = _Previous.of(existing, settings)
    corpus = Corpus()
    files, walk_failures = iter_source_files(list(paths))
    corpus.failures.extend(walk_failures)
    named = {source_key(f): f for f in files}
    unknown = sorted(remove_sources - set(prev.records))
    if unknown:
        raise ConfigError(f"source not in the index: {unknown[0]}; `clinrag index info DIR` lists the indexed sources")

    targets: list[str] = list(prev.records) if keep_existing else []
    targets += [key for key in named if key not in targets]
    corpus.sources_removed = sum(1 for key in prev.records if key not in targets or key in remove_sources)
    targets = [key for key in targets if key not in remove_sources]

    owners: dict[str, str] = {}
    if loader is not None:
        if existing is not None:
            raise ValueError("a source loader only serves builds with no previous generation")
        loaded: Iterable[LoadedSource] = loader([(key, named[key]) for key in targets])
    else:
        shown = tqdm(targets, desc="loading", unit="source", disable=not progress or len(targets) < 2, file=sys.stderr)
        loaded = (_source(key, named.get(key), prev, settings, embedder) for key in shown)
    for key, (outcome, docs, chunks) in zip(targets, loaded, strict=True):
        docs, chunks, clashes = _claim_ids(key, docs, chunks, owners)
        outcome = SourceOutcome(
            SourceRecord(
                outcome.record.path,
                outcome.record.sha256,
                outcome.record.size,
                len(docs),
                len(chunks),
                outcome.record.failures + tuple(clashes),
            ),
            outcome.loaded,
        )
        corpus.sources.append(outcome)
        corpus.failures.extend(outcome.record.failures if outcome.loaded else ())
        corpus.documents.extend(docs)
        corpus.chunks.extend(StoredChunk(c) for c in chunks)
    corpus.timings["load_and_chunk"] = time.perf_counter() - started

    _remove_documents(corpus, remove_docs)
    _remove_documents(corpus, set(forget_docs), strict=False)
    corpus.changed = (
        corpus.sources_removed > 0 or bool(remove_docs) or any(s.loaded for s in corpus.sources) or existing is None
    )
    if corpus.changed:
        t0 = time.perf_counter()
        _mark_duplicates(corpus, settings)
        corpus.timings["dedup"] = time.perf_counter() - t0
    elif existing is not None:
        corpus.chunks = list(existing.chunks)
    return corpus


def load_one(key: str, path: Path, settings: IndexSettings, embedder: Embedder) -> LoadedSource:
    """Load and chunk one source from scratch (what a worker of a distributed build runs)."""
    return _source(key, path, _Previous(), settings, embedder)


def _source(key: str, path: Path | None, prev: _Previous, settings: IndexSettings, embedder: Embedder) -> LoadedSource:
    old = prev.records.get(key)
    reusable = old is not None and prev.reusable_chunks
    if path is None and old is not None:  # kept from the bundle, not named this time: trusted as indexed
        return SourceOutcome(old, False), prev.documents.get(key, []), prev.chunks.get(key, [])
    assert path is not None
    try:
        sha, size = source_fingerprint(path), path.stat().st_size
    except OSError as exc:
        return _failed(key, old, prev, LoadFailure(key, f"cannot read: {exc.strerror}; check the path"))
    if reusable and old is not None and old.sha256 == sha:
        return SourceOutcome(old, False), prev.documents.get(key, []), prev.chunks.get(key, [])
    try:
        result = load_source(path)
        docs = list(result.documents)
        chunks = chunk_documents(docs, embedder, settings.chunker) if docs else []
    except ModelLoadError:
        raise  # not this source's fault: every source would fail the same way
    except Exception as exc:  # a loader or chunker bug must not stop a long build
        return _failed(key, old, prev, LoadFailure(key, f"internal error while indexing ({type(exc).__name__}: {exc})"))
    if not docs and old is not None:
        return _failed(key, old, prev, *result.failures)
    records = [DocumentRecord(d.doc_id, d.meta, key, sha) for d in docs]
    record = SourceRecord(key, sha, size, len(records), len(chunks), tuple(result.failures))
    return SourceOutcome(record, True), records, chunks


def _failed(
    key: str, old: SourceRecord | None, prev: _Previous, *failures: LoadFailure
) -> tuple[SourceOutcome, list[DocumentRecord], list[Chunk]]:
    """A source that failed now: keep its previous version if there is one, and say so."""
    if old is None:
        return SourceOutcome(SourceRecord(key, "", 0, failures=tuple(failures)), True), [], []
    kept = tuple(LoadFailure(f.path, f"{f.reason} (kept the previously indexed version)", f.record) for f in failures)
    record = SourceRecord(old.path, old.sha256, old.size, old.documents, old.chunks, kept)
    return SourceOutcome(record, True), prev.documents.get(key, []), prev.chunks.get(key, [])


def _claim_ids(
    key: str, docs: list[DocumentRecord], chunks: list[Chunk], owners: dict[str, str]
) -> tuple[list[DocumentRecord], list[Chunk], list[LoadFailure]]:
    """A document id belongs to the first source that has it; later copies are skipped and reported."""
    clashes = []
    kept_docs = []
    for doc in docs:
        owner = owners.setdefault(doc.doc_id, key)
        if owner == key:
            kept_docs.append(doc)
        else:
            clashes.append(
                LoadFailure(key, f"duplicate document id, already indexed from {owner}; skipped", doc.doc_id)
            )
    kept_ids = {d.doc_id for d in kept_docs}
    return kept_docs, [c for c in chunks if c.doc_id in kept_ids], clashes


def _remove_documents(corpus: Corpus, doc_ids: set[str], *, strict: bool = True) -> None:
    """Drop these documents and their chunks; `strict`: an id the corpus does not hold is an error."""
    if not doc_ids:
        return
    present = {d.doc_id for d in corpus.documents}
    unknown = sorted(doc_ids - present)
    if unknown and strict:
        raise ConfigError(f"document not in the index: {unknown[0]}; `clinrag index info DIR --json` lists sources")
    corpus.documents = [d for d in corpus.documents if d.doc_id not in doc_ids]
    corpus.chunks = [c for c in corpus.chunks if c.chunk.doc_id not in doc_ids]


def _mark_duplicates(corpus: Corpus, settings: IndexSettings) -> None:
    chunks = [c.chunk for c in corpus.chunks]
    duplicate_of = find_duplicates(chunks, settings.chunker.near_duplicate_threshold) if settings.chunker.dedup else {}
    corpus.chunks = [StoredChunk(c, duplicate_of.get(c.chunk_id)) for c in chunks]
