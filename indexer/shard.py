"""One shard of a sharded index: embedded (embedding cache first), indexed and written as an ordinary bundle.

Run in this process by `indexer.sharded` or as a Ray task by `indexer.ray_build`; both import it, neither the other.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from indexer.assemble import Corpus
from indexer.build import bm25_tokenizer, bundle_manifest, open_embedding_cache, term_counts
from indexer.report import ShardResult
from indexer.vectors import assemble_vectors
from rag.core.config import IndexSettings
from rag.index.dense import build_dense_index, faiss_ids
from rag.index.shards import shard_name
from rag.index.sparse import CorpusStats
from rag.index.store import DocumentRecord, StoredChunk, write_generation, write_lock
from rag.models.embed import Embedder


def write_shard(
    folder: Path,
    index: int,
    settings: IndexSettings,
    embedder: Embedder,
    documents: list[DocumentRecord],
    chunks: list[StoredChunk],
    *,
    progress: bool = False,
) -> ShardResult:
    """Embed (cache first), index and write one shard as an ordinary bundle at `folder/shard-NNN`."""
    started = time.perf_counter()
    directory = folder / shard_name(index)
    tokenizer = bm25_tokenizer(settings)
    active = [c.chunk for c in chunks if c.duplicate_of is None]
    cache = open_embedding_cache(settings)
    try:
        vectors, vector_stats = assemble_vectors(active, embedder, {}, cache, progress=progress)
    finally:
        if cache is not None:
            cache.close()
    if not active:
        vectors = np.zeros((0, embedder.dim), dtype=np.float32)
    counts = term_counts(active, None, tokenizer, settings)
    dense = build_dense_index(vectors, faiss_ids([c.chunk_id for c in active]), settings.dense)
    shard_corpus = Corpus(documents=documents, chunks=chunks)
    manifest = bundle_manifest(
        None, settings, embedder, vectors.shape[1], tokenizer, shard_corpus, len(active), started
    )
    manifest["shard"] = index
    with write_lock(directory):
        write_generation(directory, manifest, documents, chunks, vectors, dense, counts)
    return ShardResult(index, len(documents), len(chunks), len(active), CorpusStats.of(counts), vector_stats,
                       time.perf_counter() - started)  # fmt: skip
