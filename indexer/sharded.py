"""Sharded builds: N ordinary bundles and corpus-wide BM25 statistics, in this process or across a Ray cluster.

    build_sharded_index(["corpora/datasets"], "indexes/big", n_shards=4)                      # in this process
    build_sharded_index(["corpora/datasets"], "indexes/big", n_shards=4, ray_address="auto")  # on a Ray cluster

The same steps run either way: every source is read and chunked (Ray Data spreads the files over the cluster's
workers), document ids are claimed and duplicates collapsed over the whole corpus (so a sharded index holds the
same searchable chunks as a single bundle of the same sources), documents go to the shard their id hashes to,
and each shard is embedded, indexed and written by one task (a Ray task on a cluster) that takes unchanged
vectors from the embedding cache first. The shards' BM25 statistics are merged and the whole index is committed
by replacing `shards.json` (rag.index.shards). A build killed at any point leaves the previous index whole; what was
embedded before the kill is in the cache, so the rerun resumes there.

`add` and `remove` rebuild from the recorded sources plus the new ones (or minus the removed ones); vectors of
unchanged chunks come from the cache, so only new text is embedded.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from indexer.assemble import Corpus, SourceLoader, assemble_corpus
from indexer.build import bm25_tokenizer, manifest_settings, show_progress
from indexer.load import refuse_collections
from indexer.report import ShardedBuildReport, ShardResult
from indexer.shard import write_shard
from indexer.sources import TEXT_PIPELINE_VERSION, source_key
from rag.core.config import IndexSettings
from rag.core.errors import BundleError, ConfigError
from rag.core.files import now_iso
from rag.index.shards import (
    commit_sharded,
    generation_dir,
    holds_only_sharded_files,
    is_sharded,
    next_generation,
    read_sharded_manifest,
    remove_other_generations,
    shard_of,
)
from rag.index.sparse import CorpusStats
from rag.index.store import DocumentRecord, StoredChunk, absorbed_by_chunk, is_bundle, write_lock
from rag.models.embed import Embedder, LazyEmbedder

MAX_SHARDS = 4096


def build_sharded_index(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    n_shards: int,
    settings: IndexSettings | None = None,
    *,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    ray_address: str | None = None,
) -> ShardedBuildReport:
    """Make the sharded index at `out_dir` hold exactly `sources`, split into `n_shards` bundles."""
    if not sources:
        raise ConfigError("no sources given: name files or directories to index")
    if not 1 <= n_shards <= MAX_SHARDS:
        raise ConfigError(f"--shards must be between 1 and {MAX_SHARDS}, got {n_shards}")
    return _update(Path(out_dir), settings or IndexSettings(), n_shards, embedder, progress, ray_address,
                   paths=[Path(s) for s in sources])  # fmt: skip


def add_to_sharded(
    index_dir: str | Path,
    sources: Sequence[str | Path],
    *,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    ray_address: str | None = None,
) -> ShardedBuildReport:
    """Add sources to a sharded index, with the settings and shard count it was built with."""
    if not sources:
        raise ConfigError("no sources given: name files or directories to add")
    directory = Path(index_dir)
    manifest = read_sharded_manifest(directory)
    paths = [Path(r["path"]) for r in manifest["sources"]] + [Path(s) for s in sources]
    return _update(directory, manifest_settings(manifest, directory), int(manifest["n_shards"]), embedder, progress,
                   ray_address, paths=paths, previous=manifest)  # fmt: skip


def remove_from_sharded(
    index_dir: str | Path,
    *,
    doc_ids: Sequence[str] = (),
    source_paths: Sequence[str | Path] = (),
    embedder: Embedder | None = None,
    progress: bool | None = None,
    ray_address: str | None = None,
) -> ShardedBuildReport:
    """Remove documents by id or whole sources from a sharded index. Unknown ids or paths are errors."""
    if not doc_ids and not source_paths:
        raise ConfigError("nothing to remove: give document ids (--doc) or source paths (--source)")
    directory = Path(index_dir)
    manifest = read_sharded_manifest(directory)
    recorded = [r["path"] for r in manifest["sources"]]
    dropped = {source_key(Path(p)) for p in source_paths}
    unknown = sorted(dropped - set(recorded))
    if unknown:
        raise ConfigError(f"source not in the index: {unknown[0]}; `clinrag index info DIR` lists the indexed sources")
    paths = [Path(p) for p in recorded if p not in dropped]
    if not paths:
        raise ConfigError("removing every source would leave an empty index; delete the folder instead")
    return _update(directory, manifest_settings(manifest, directory), int(manifest["n_shards"]), embedder, progress,
                   ray_address, paths=paths, previous=manifest, remove_docs=set(doc_ids))  # fmt: skip


def _update(
    directory: Path,
    settings: IndexSettings,
    n_shards: int,
    embedder: Embedder | None,
    progress: bool | None,
    ray_address: str | None,
    *,
    paths: list[Path],
    previous: dict[str, Any] | None = None,
    remove_docs: set[str] | None = None,
) -> ShardedBuildReport:
    started = time.perf_counter()
    show = show_progress(progress, settings)
    refuse_collections(paths)  # before --out is created or locked; the walk checks folders inside the sources too
    _check_out_dir(directory)
    embedder = embedder or LazyEmbedder(settings.embedder)
    ray = None
    if ray_address is not None:
        from rag.core.ray_cluster import connect

        ray = connect(ray_address)
    with write_lock(directory):
        if previous is None and is_sharded(directory):
            try:
                previous = read_sharded_manifest(directory)
            except BundleError:
                previous = None  # a damaged index is replaced by a full build, as for a single bundle
        if previous is not None and previous["embedder"]["name"] != embedder.name:
            raise ConfigError(f"{directory}: index was built with embedder {previous['embedder']['name']!r}, not "
                              f"{embedder.name!r}; rebuild into a new directory to change embedders")  # fmt: skip
        loader: SourceLoader | None = None
        if ray is not None:
            from indexer.ray_build import ray_source_loader

            loader = ray_source_loader(ray, settings, embedder, progress=show)
        # A sharded update re-reads its sources, so documents removed by id before must be left out again.
        removed = frozenset((previous or {}).get("removed_documents", []))
        corpus = assemble_corpus(paths, None, settings, embedder, keep_existing=False, remove_docs=remove_docs or set(),
                                 remove_sources=set(), progress=show, loader=loader, forget_docs=removed)  # fmt: skip
        timings = dict(corpus.timings)
        _refuse_lost_sources(corpus, previous)
        generation = next_generation(directory)
        folder = generation_dir(directory, generation)
        remove_other_generations(directory, keep=_committed_generation(previous))  # a killed build's leftovers
        folder.mkdir()
        try:
            t0 = time.perf_counter()
            parts = partition(corpus, n_shards)
            if ray is not None:
                from indexer.ray_build import run_shards_on_ray

                results = run_shards_on_ray(ray, folder, settings, embedder, parts, progress=show)
            else:
                bar = tqdm(parts, desc="shards", unit="shard", disable=not show or n_shards < 2, file=sys.stderr)
                results = [
                    write_shard(folder, i, settings, embedder, *part, progress=show) for i, part in enumerate(bar)
                ]
            timings["shards"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            stats = CorpusStats.merge([r.stats for r in results])
            manifest = _sharded_manifest(previous, settings, embedder, corpus, n_shards, results, started)
            manifest["removed_documents"] = sorted(removed | (remove_docs or set()))
            commit_sharded(directory, generation, manifest, stats, absorbed_by_chunk(corpus.chunks))
            timings["commit"] = time.perf_counter() - t0
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return _report(directory, corpus, n_shards, ray_address, results, started, timings)


def _check_out_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a directory; choose another --out")
    if is_bundle(directory):
        raise ConfigError(f"{directory}: holds a single (unsharded) index; build the sharded one into a new --out")
    if directory.is_dir() and not is_sharded(directory) and not holds_only_sharded_files(directory):
        raise ConfigError(f"{directory}: directory is not empty and holds no clinrag index; choose an empty --out")


def _committed_generation(previous: dict[str, Any] | None) -> int | None:
    return int(previous["generation"]) if previous is not None else None


def _refuse_lost_sources(corpus: Corpus, previous: dict[str, Any] | None) -> None:
    """`add` and `remove` re-read the recorded sources: one that is gone would silently drop its documents."""
    if previous is None:
        return
    had = {r["path"] for r in previous["sources"] if r.get("documents")}
    missing = [f for f in corpus.failures if f.path in had and not Path(f.path).is_file()]
    lost = missing or [f for s in corpus.sources if s.record.path in had and not s.record.documents
                       for f in s.record.failures]  # fmt: skip
    if lost:
        state = "missing" if missing else f"unreadable ({lost[0].reason})"
        raise ConfigError(
            f"{lost[0].path}: indexed before but now {state}; the sharded index re-reads its sources on add and "
            "remove: restore the file, or drop it with `clinrag index remove DIR --source PATH`"
        )


def partition(corpus: Corpus, n_shards: int) -> list[tuple[list[DocumentRecord], list[StoredChunk]]]:
    """Documents and their chunks (collapsed duplicates included) by the shard each document id hashes to."""
    parts: list[tuple[list[DocumentRecord], list[StoredChunk]]] = [([], []) for _ in range(n_shards)]
    where = {}
    for doc in corpus.documents:
        where[doc.doc_id] = shard_of(doc.doc_id, n_shards)
        parts[where[doc.doc_id]][0].append(doc)
    for stored in corpus.chunks:
        parts[where[stored.chunk.doc_id]][1].append(stored)
    return parts


def _sharded_manifest(
    previous: dict[str, Any] | None,
    settings: IndexSettings,
    embedder: Embedder,
    corpus: Corpus,
    n_shards: int,
    results: list[ShardResult],
    started: float,
) -> dict[str, Any]:
    tokenizer = bm25_tokenizer(settings)
    searchable = sum(r.searchable for r in results)
    return {
        "created_at": (previous or {}).get("created_at", now_iso()),
        "build_seconds": round(time.perf_counter() - started, 3),
        "n_shards": n_shards,
        "settings": settings.model_dump(mode="json"),
        "embedder": {"name": embedder.name, "dim": embedder.dim, "normalized": embedder.normalized},
        "text_pipeline_version": TEXT_PIPELINE_VERSION,
        "bm25": {**settings.bm25.model_dump(mode="json"), "tokenizer": tokenizer.config.to_json()},
        "sources": [s.record.to_json() for s in corpus.sources],
        "failures": [f.to_json() for f in corpus.failures],
        "counts": {
            "sources": len(corpus.sources),
            "documents": len(corpus.documents),
            "chunks": len(corpus.chunks),
            "active_chunks": searchable,
            "duplicates": len(corpus.chunks) - searchable,
            "per_shard": [r.searchable for r in results],
        },
    }


def _report(
    directory: Path,
    corpus: Corpus,
    n_shards: int,
    ray_address: str | None,
    results: list[ShardResult],
    started: float,
    timings: dict[str, float],
) -> ShardedBuildReport:
    searchable = sum(r.searchable for r in results)
    return ShardedBuildReport(
        directory=str(directory),
        committed=True,
        n_shards=n_shards,
        ray=ray_address,
        sources=len(corpus.sources),
        documents=len(corpus.documents),
        chunks=len(corpus.chunks),
        searchable_chunks=searchable,
        duplicates=len(corpus.chunks) - searchable,
        vectors_cached=sum(r.vectors.cached for r in results),
        vectors_embedded=sum(r.vectors.embedded for r in results),
        shards=tuple(sorted(results, key=lambda r: r.index)),
        failures=tuple(corpus.failures),
        seconds=time.perf_counter() - started,
        timings=timings,
    )
