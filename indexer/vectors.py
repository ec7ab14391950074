"""Vectors for the searchable chunks: reused from the bundle, then from the cache, and only the rest embedded.

Embedding runs in length-sorted blocks; each finished block goes to the cache at once, so a build that is
killed or fails keeps what it embedded and a rerun starts where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from indexer.embed_cache import EmbeddingCache
from rag.core.types import Chunk
from rag.models.embed import Embedder

Vectors = npt.NDArray[np.float32]
BLOCK = 1024


@dataclass(frozen=True)
class VectorStats:
    reused: int = 0  # taken from the previous generation of the bundle
    cached: int = 0  # taken from the embedding cache
    embedded: int = 0  # computed now
    embed_seconds: float = 0.0


def assemble_vectors(
    chunks: Sequence[Chunk],
    embedder: Embedder,
    previous: Mapping[str, Vectors],
    cache: EmbeddingCache | None,
    *,
    progress: bool = False,
) -> tuple[Vectors, VectorStats]:
    """One row per chunk, in order. `previous` maps content hashes to vectors of the old generation."""
    import time

    rows: dict[str, Vectors] = {}
    reused = 0
    for chunk in chunks:
        vec = previous.get(chunk.content_hash)
        if vec is not None and chunk.content_hash not in rows:
            rows[chunk.content_hash] = vec
            reused += 1
    wanted = list(dict.fromkeys(c.content_hash for c in chunks if c.content_hash not in rows))
    cached = 0
    if cache is not None and wanted:
        hits = cache.get_many(embedder.name, wanted)
        rows.update(hits)
        cached = len(hits)
    texts = {c.content_hash: c.indexed_text for c in chunks if c.content_hash not in rows}
    started = time.perf_counter()
    if texts:
        _embed_missing(texts, embedder, cache, rows, progress=progress)
    seconds = time.perf_counter() - started
    dim = embedder.dim if chunks else 0
    out = np.zeros((len(chunks), dim), dtype=np.float32)
    for i, chunk in enumerate(chunks):
        out[i] = rows[chunk.content_hash]
    return out, VectorStats(reused, cached, len(texts), seconds)


def _embed_missing(
    texts: dict[str, str],
    embedder: Embedder,
    cache: EmbeddingCache | None,
    rows: dict[str, Vectors],
    *,
    progress: bool,
) -> None:
    # Sorting by length keeps padding low, as SentenceTransformer.encode does inside one call.
    order = sorted(texts, key=lambda key: len(texts[key]), reverse=True)
    with tqdm(total=len(order), desc="embedding", unit="chunk", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(order), BLOCK):
            keys = order[start : start + BLOCK]
            vectors = embedder.embed([texts[k] for k in keys])
            if vectors.shape[0] != len(keys):
                raise RuntimeError(
                    f"embedder {embedder.name} returned {vectors.shape[0]} vectors for {len(keys)} texts"
                )
            block = list(zip(keys, vectors, strict=True))
            rows.update(block)
            if cache is not None:
                cache.put_many(embedder.name, block)
            bar.update(len(keys))
