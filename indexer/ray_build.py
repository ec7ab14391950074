"""The Ray side of a sharded build: Ray Data reads and chunks the sources, one Ray task per shard embeds and writes it.

Records cross process boundaries as the JSON the bundle itself stores (documents, chunks, source records), so
what a worker produced is exactly what a local build would have produced. Each worker loads the embedder once
(one loader actor per CPU; one model per shard task) and, with one CPU per task, runs torch on one thread:
two workers on two cores embed in parallel instead of contending for the same cores.

A shard task that dies (a killed worker, a lost node) is retried by Ray; the vectors it embedded before dying are
in the embedding cache, so the retry embeds only the rest. A task that fails for good fails the build, and the
previous index stays committed (indexer.sharded).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from indexer.assemble import LoadedSource, SourceLoader, SourceOutcome, load_one
from indexer.report import ShardResult
from indexer.shard import write_shard
from indexer.sources import SourceRecord
from rag.core.config import IndexSettings
from rag.core.errors import ConfigError
from rag.core.ray_cluster import cause, worker_cpus
from rag.core.types import Chunk
from rag.index.store import DocumentRecord, StoredChunk
from rag.models.embed import Embedder, LazyEmbedder, SentenceTransformerEmbedder

TASK_RETRIES = 2


def portable_embedder(embedder: Embedder) -> Embedder | None:
    """None when workers should load the model from settings themselves (a real model is not shipped)."""
    return None if isinstance(embedder, LazyEmbedder | SentenceTransformerEmbedder) else embedder


def worker_embedder(settings: IndexSettings, shipped: Embedder | None, expected: str) -> Embedder:
    embedder = shipped or LazyEmbedder(settings.embedder)
    if embedder.name != expected:
        raise ConfigError(f"a Ray worker resolved embedder {settings.embedder.model!r} to {embedder.name!r}, but the "
                          f"build uses {expected!r}; install the same model on every node")  # fmt: skip
    return embedder


class _SourceLoaderActor:
    """Loads and chunks sources on a worker; the embedder (for token counts) is loaded once per actor."""

    def __init__(self, settings: dict[str, Any], shipped: Embedder | None, expected: str) -> None:
        self._settings = IndexSettings.model_validate(settings)
        self._embedder = worker_embedder(self._settings, shipped, expected)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for key, path in zip(batch["key"], batch["path"], strict=True):
            outcome, docs, chunks = load_one(str(key), Path(str(path)), self._settings, self._embedder)
            out.append(json.dumps({"record": outcome.record.to_json(), "loaded": outcome.loaded,
                                   "documents": [d.to_json() for d in docs],
                                   "chunks": [c.to_json() for c in chunks]}))  # fmt: skip
        return {"i": batch["i"], "result": np.asarray(out, dtype=object)}


def ray_source_loader(ray: Any, settings: IndexSettings, embedder: Embedder, *, progress: bool) -> SourceLoader:
    """Read and chunk sources with Ray Data across the cluster; results in input order."""

    def load(items: list[tuple[str, Path]]) -> list[LoadedSource]:
        if not items:
            return []
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
        rows = [{"i": i, "key": key, "path": str(path.resolve())} for i, (key, path) in enumerate(items)]
        workers = min(len(rows), worker_cpus(ray))
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _SourceLoaderActor,
            fn_constructor_args=(settings.model_dump(mode="json"), portable_embedder(embedder), embedder.name),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        try:
            done = sorted(dataset.take_all(), key=lambda row: int(row["i"]))
        except Exception as exc:  # a worker's own error, wrapped by Ray Data
            raise ConfigError(f"reading sources on the Ray cluster failed: {cause(exc)}") from exc
        return [_decode(str(row["result"])) for row in done]

    return load


def _decode(text: str) -> LoadedSource:
    data = json.loads(text)
    docs = [DocumentRecord.from_json(d) for d in data["documents"]]
    chunks = [Chunk.from_json(c) for c in data["chunks"]]
    return SourceOutcome(SourceRecord.from_json(data["record"]), bool(data["loaded"])), docs, chunks


def _shard_task(
    folder: str,
    index: int,
    settings: dict[str, Any],
    shipped: Embedder | None,
    expected: str,
    documents: list[dict[str, Any]],
    chunks: list[dict[str, Any]],
) -> ShardResult:
    parsed = IndexSettings.model_validate(settings)
    return write_shard(
        Path(folder),
        index,
        parsed,
        worker_embedder(parsed, shipped, expected),
        [DocumentRecord.from_json(d) for d in documents],
        [StoredChunk(Chunk.from_json(c), c.get("duplicate_of")) for c in chunks],
    )


def run_shards_on_ray(
    ray: Any,
    folder: Path,
    settings: IndexSettings,
    embedder: Embedder,
    parts: list[tuple[list[DocumentRecord], list[StoredChunk]]],
    *,
    progress: bool,
) -> list[ShardResult]:
    """One task per shard (one CPU each), as many at once as the cluster has CPUs; results in shard order."""
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_shard_task)
    payload = (settings.model_dump(mode="json"), portable_embedder(embedder), embedder.name)
    pending = {}
    for index, (docs, chunks) in enumerate(parts):
        rows = [{**c.chunk.to_json(), **({"duplicate_of": c.duplicate_of} if c.duplicate_of else {})} for c in chunks]
        ref = task.remote(str(folder.resolve()), index, *payload, [d.to_json() for d in docs], rows)
        pending[ref] = index
    results: list[ShardResult] = []
    with tqdm(total=len(parts), desc="shards", unit="shard", disable=not progress, file=sys.stderr) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            try:
                results.append(ray.get(ready[0]))
            except Exception as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise ConfigError(f"shard {index} failed on the Ray cluster: {cause(exc)}; the previous index is "
                                  "unchanged and a rerun takes finished vectors from the cache") from exc  # fmt: skip
            bar.update(1)
    return sorted(results, key=lambda r: r.index)
