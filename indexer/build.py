"""Full and incremental index builds: `build_index`, `add_sources`, `remove_from_index`.

One update path serves all three: decide which source files the bundle should hold, reuse documents and
chunks of sources whose hash is unchanged, load and chunk the rest, collapse duplicates, reuse or embed
vectors, rebuild BM25 from stored counts and FAISS from vectors, and commit a new generation atomically.
A source that fails is reported and skipped (its previous version, if any, is kept): bad input never
stops a build and never loses what was indexed before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.assemble import Corpus, assemble_corpus
from indexer.embed_cache import EmbeddingCache
from indexer.load import refuse_collections
from indexer.report import BuildReport
from indexer.sources import TEXT_PIPELINE_VERSION, source_key
from indexer.vectors import Vectors, VectorStats, assemble_vectors
from rag.core.config import IndexSettings, default_cache_dir
from rag.core.errors import BundleError, BundleMismatchError, ConfigError
from rag.core.files import now_iso
from rag.index.dense import build_dense_index, effective_kind, faiss_ids
from rag.index.sparse import TermCounts
from rag.index.store import (
    BundleContents,
    check_embedder,
    holds_only_clinrag_files,
    is_bundle,
    load_bundle,
    write_generation,
    write_lock,
)
from rag.models.embed import Embedder, LazyEmbedder
from rag.text.tokenize import ClinicalTokenizer, TokenizerConfig


def build_index(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    settings: IndexSettings | None = None,
    *,
    embedder: Embedder | None = None,
    progress: bool | None = None,
) -> BuildReport:
    """Make the bundle at `out_dir` hold exactly `sources` (files and directories), reusing unchanged work."""
    if not sources:
        raise ConfigError("no sources given: name files or directories to index")
    return _update(Path(out_dir), settings, embedder, progress, paths=[Path(s) for s in sources], keep_existing=False)


def add_sources(
    index_dir: str | Path,
    sources: Sequence[str | Path],
    *,
    embedder: Embedder | None = None,
    progress: bool | None = None,
) -> BuildReport:
    """Add sources to an existing bundle, with the settings it was built with."""
    if not sources:
        raise ConfigError("no sources given: name files or directories to add")
    directory = Path(index_dir)
    settings = _bundle_settings(directory)
    return _update(directory, settings, embedder, progress, paths=[Path(s) for s in sources], keep_existing=True)


def remove_from_index(
    index_dir: str | Path,
    *,
    doc_ids: Sequence[str] = (),
    source_paths: Sequence[str | Path] = (),
    embedder: Embedder | None = None,
    progress: bool | None = None,
) -> BuildReport:
    """Remove documents by id, or every document of a source file. Unknown ids or paths are errors."""
    if not doc_ids and not source_paths:
        raise ConfigError("nothing to remove: give document ids (--doc) or source paths (--source)")
    directory = Path(index_dir)
    settings = _bundle_settings(directory)
    return _update(
        directory,
        settings,
        embedder,
        progress,
        paths=[],
        keep_existing=True,
        remove_docs=set(doc_ids),
        remove_sources={source_key(Path(p)) for p in source_paths},
    )


def _bundle_settings(directory: Path) -> IndexSettings:
    from rag.index.store import read_manifest

    return manifest_settings(read_manifest(directory), directory)


def manifest_settings(manifest: Mapping[str, Any], directory: Path) -> IndexSettings:
    """The settings an index (a bundle or a sharded index) was built with, from its manifest."""
    try:
        return IndexSettings.model_validate(manifest["settings"])
    except (KeyError, ValueError) as exc:
        raise BundleError(f"{directory}: manifest has no usable settings ({exc}); rebuild the index") from exc


def _update(
    directory: Path,
    settings: IndexSettings | None,
    embedder: Embedder | None,
    progress: bool | None,
    *,
    paths: list[Path],
    keep_existing: bool,
    remove_docs: set[str] | None = None,
    remove_sources: set[str] | None = None,
) -> BuildReport:
    started = time.perf_counter()
    settings = settings or IndexSettings()
    show = show_progress(progress, settings)
    refuse_collections(paths)  # before --out is created or locked; the walk checks folders inside the sources too
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a directory; choose another --out")
    if directory.is_dir() and not is_bundle(directory) and not holds_only_clinrag_files(directory):
        raise ConfigError(f"{directory}: directory is not empty and holds no clinrag index; choose an empty --out")
    embedder = embedder or LazyEmbedder(settings.embedder)
    with write_lock(directory):
        existing = _existing_bundle(directory, keep_existing)
        if existing is not None:
            check_embedder(existing.manifest, directory, embedder.name)
        tokenizer = bm25_tokenizer(settings)
        corpus = assemble_corpus(
            paths,
            existing,
            settings,
            embedder,
            keep_existing=keep_existing,
            remove_docs=remove_docs or set(),
            remove_sources=remove_sources or set(),
            progress=show,
        )
        timings = dict(corpus.timings)
        if existing is not None and not corpus.changed and _same_build(existing, settings):
            return _report(directory, False, corpus, VectorStats(), started, timings)
        cache = open_embedding_cache(settings)
        t0 = time.perf_counter()
        try:
            active = [c.chunk for c in corpus.chunks if c.duplicate_of is None]
            vectors, stats = assemble_vectors(active, embedder, _previous_vectors(existing), cache, progress=show)
        finally:
            if cache is not None:
                cache.close()
        timings["vectors"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = term_counts(active, existing, tokenizer, settings)
        timings["bm25"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dim = embedder.dim if (active or embedder_loaded(embedder)) else _existing_dim(existing)
        if not active:
            vectors = np.zeros((0, dim), dtype=np.float32)
        dense = build_dense_index(vectors, faiss_ids([c.chunk_id for c in active]), settings.dense)
        timings["faiss"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        manifest = bundle_manifest(existing, settings, embedder, dim, tokenizer, corpus, len(active), started)
        write_generation(directory, manifest, corpus.documents, corpus.chunks, vectors, dense, counts)
        timings["write"] = time.perf_counter() - t0
        report = _report(directory, True, corpus, stats, started, timings)
    return report


def show_progress(progress: bool | None, settings: IndexSettings) -> bool:
    """The caller's choice, else the settings', else a bar only when stderr is a terminal."""
    if progress is None and settings.progress is None:
        return sys.stderr.isatty()
    return bool(progress if progress is not None else settings.progress)


def bm25_tokenizer(settings: IndexSettings) -> ClinicalTokenizer:
    return ClinicalTokenizer(TokenizerConfig(stem=settings.bm25.stem, stopwords=settings.bm25.stopwords))


def _existing_bundle(directory: Path, keep_existing: bool) -> BundleContents | None:
    """The committed bundle to update, or None. A full build replaces a damaged bundle (the message of every
    integrity error says to rebuild, so rebuilding must work); `add` and `remove` need the old contents and
    refuse. A bundle of another format version or embedder is never silently replaced."""
    if not is_bundle(directory):
        return None
    try:
        return load_bundle(directory)
    except BundleMismatchError:
        raise
    except BundleError:
        if keep_existing:
            raise
        return None


def embedder_loaded(embedder: Embedder) -> bool:
    return not isinstance(embedder, LazyEmbedder) or embedder.loaded


def _existing_dim(existing: BundleContents | None) -> int:
    if existing is None:
        raise BundleError("cannot determine the embedding dimension of an empty index")
    return int(existing.manifest["embedder"]["dim"])


def _same_build(existing: BundleContents, settings: IndexSettings) -> bool:
    manifest = existing.manifest
    return bool(
        manifest.get("settings") == settings.model_dump(mode="json")
        and manifest.get("text_pipeline_version") == TEXT_PIPELINE_VERSION
    )


def open_embedding_cache(settings: IndexSettings) -> EmbeddingCache | None:
    if not settings.use_cache:
        return None
    return EmbeddingCache(default_cache_dir(settings) / "embeddings.sqlite")


def _previous_vectors(existing: BundleContents | None) -> dict[str, Vectors]:
    if existing is None:
        return {}
    return {c.content_hash: existing.vectors[i] for i, c in enumerate(existing.active_chunks)}


def term_counts(
    active: list[Any], existing: BundleContents | None, tokenizer: ClinicalTokenizer, settings: IndexSettings
) -> TermCounts:
    """BM25 counts in `active` order: old rows reused when the tokenizer is unchanged, new chunks tokenized."""
    reusable = existing is not None and existing.manifest.get("bm25", {}).get("tokenizer") == tokenizer.config.to_json()
    old_rows: dict[str, int] = {}
    base = TermCounts.empty()
    if existing is not None and reusable:
        old_rows = {c.chunk_id: i for i, c in enumerate(existing.active_chunks)}
        base = existing.term_counts
    fresh = [c for c in active if c.chunk_id not in old_rows]
    combined = base.extend(tokenizer.tokenize_many(c.indexed_text for c in fresh))
    fresh_rows = {c.chunk_id: base.n_docs + i for i, c in enumerate(fresh)}
    order = [old_rows[c.chunk_id] if c.chunk_id in old_rows else fresh_rows[c.chunk_id] for c in active]
    return _drop_unused_terms(combined.select_rows(order))


def _drop_unused_terms(counts: TermCounts) -> TermCounts:
    used = np.unique(counts.matrix.indices) if counts.matrix.nnz else np.zeros(0, dtype=np.int64)
    if used.size == len(counts.vocab):
        return counts
    return TermCounts(counts.matrix[:, used].tocsr(), tuple(counts.vocab[j] for j in used))


def bundle_manifest(
    existing: BundleContents | None,
    settings: IndexSettings,
    embedder: Embedder,
    dim: int,
    tokenizer: ClinicalTokenizer,
    corpus: Corpus,
    n_active: int,
    started: float,
) -> dict[str, Any]:
    previous = existing.manifest if existing is not None else {}
    failures = [f.to_json() for s in corpus.sources for f in s.record.failures]
    return {
        "created_at": previous.get("created_at", now_iso()),
        "updated_at": now_iso(),
        "build_seconds": round(time.perf_counter() - started, 3),
        "settings": settings.model_dump(mode="json"),
        "embedder": {
            "name": embedder.name,
            "dim": dim,
            "normalized": embedder.normalized,
            "max_tokens": embedder.max_tokens
            if embedder_loaded(embedder)
            else previous.get("embedder", {}).get("max_tokens"),
        },
        "chunker": settings.chunker.model_dump(mode="json"),
        "text_pipeline_version": TEXT_PIPELINE_VERSION,
        "bm25": {**settings.bm25.model_dump(mode="json"), "tokenizer": tokenizer.config.to_json()},
        "dense": {
            **settings.dense.model_dump(mode="json"),
            "metric": "inner_product",
            "built_kind": effective_kind(settings.dense, n_active, dim),
        },
        "sources": [s.record.to_json() for s in corpus.sources],
        "failures": failures,
        "counts": {
            "sources": len(corpus.sources),
            "documents": len(corpus.documents),
            "chunks": len(corpus.chunks),
            "active_chunks": n_active,
            "duplicates": len(corpus.chunks) - n_active,
        },
    }


def _report(
    directory: Path, committed: bool, corpus: Corpus, stats: VectorStats, started: float, timings: dict[str, float]
) -> BuildReport:
    n_active = sum(1 for c in corpus.chunks if c.duplicate_of is None)
    return BuildReport(
        directory=str(directory),
        committed=committed,
        sources=len(corpus.sources),
        sources_loaded=sum(1 for s in corpus.sources if s.loaded),
        sources_unchanged=sum(1 for s in corpus.sources if not s.loaded),
        sources_removed=corpus.sources_removed,
        documents=len(corpus.documents),
        chunks=len(corpus.chunks),
        searchable_chunks=n_active,
        duplicates=len(corpus.chunks) - n_active,
        vectors_reused=stats.reused,
        vectors_cached=stats.cached,
        vectors_embedded=stats.embedded,
        failures=tuple(corpus.failures),
        seconds=time.perf_counter() - started,
        timings=timings,
    )
