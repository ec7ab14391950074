"""Search over a sharded index: the query is embedded once, every shard is searched at once, rankings merged.

    searcher = ShardedSearcher.load("indexes/pubmed")                 # one thread per shard, in this process
    searcher = ShardedSearcher.load("indexes/pubmed", ray_address="auto")  # one Ray actor per shard
    evidence = searcher.search("first-line treatment of cystitis", k=5)

Each shard scores BM25 with the corpus-wide statistics (rag.index.shards), and dense scores are inner products of the
same query vector, so scores from different shards compare directly: a shard's best `depth` hits per retriever,
merged by score, are exactly the single bundle's best `depth` (for exact dense search; an ANN index within its
recall). Fusion, document collapsing, MMR and reranking then run once, here, as `Searcher.search` runs them.
Filters are applied inside each shard before its retrievers rank, as in a single bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.core.config import IndexSettings, RetrievalSettings
from rag.core.errors import BundleError, BundleMismatchError, ConfigError
from rag.core.types import Chunk, DocumentMeta, Evidence, RetrieverHit
from rag.index.dense import faiss_id
from rag.index.shards import ShardedIndex, load_sharded
from rag.index.store import load_bundle
from rag.models.embed import Embedder, LazyEmbedder, Span
from rag.retrieval.filters import Filters
from rag.retrieval.fusion import Fused, collapse, maximal_marginal_relevance
from rag.retrieval.protocols import Mode, Reranker
from rag.retrieval.search import DenseRetriever, RerankerOnFirstUse, Searcher, fuse, plan_search, rerank_pool

ShardHits = dict[str, list[tuple[str, str, float]]]  # retriever -> (chunk id, document id, score), best first


class ShardSearcher:
    """One shard, searched by tokens and an embedded query. Lives in the caller's process or in a Ray actor."""

    def __init__(self, index_dir: str, shard: int) -> None:
        index = load_sharded(Path(index_dir))
        bundle = load_bundle(index.shard_dirs[shard])
        self._searcher = Searcher(bundle, _VectorsGiven(index.embedder), RetrievalSettings(query_cache_size=0),
                                  bm25_stats=index.stats, absorbed={})  # fmt: skip
        dense = self._searcher.retrievers["dense"]
        assert isinstance(dense, DenseRetriever)
        self._dense = dense  # its FAISS-id -> row map also finds records: no second map of 1M chunk ids

    def size(self) -> int:
        """Searchable chunks in this shard."""
        return len(self._searcher.chunks)

    def rankings(
        self, text: str, vector: npt.NDArray[np.float32] | None, depth: int, filters: Filters, names: Sequence[str]
    ) -> ShardHits:
        allowed = self._searcher._mask(filters)
        chunks = self._searcher.chunks
        out: ShardHits = {}
        for name in names:
            retriever = self._searcher.retrievers[name]
            if name == "dense":
                assert vector is not None
                ranking = self._dense.retrieve_vector(vector, depth, allowed)
            else:
                ranking = retriever.retrieve(text, depth, allowed)
            out[name] = [(chunks[row].chunk_id, chunks[row].doc_id, score) for row, score in ranking]
        return out

    def records(self, chunk_ids: Sequence[str]) -> list[tuple[Chunk, DocumentMeta]]:
        chunks = [self._searcher.chunks[self._dense.row(faiss_id(c))] for c in chunk_ids]
        return [(c, self._searcher.metas[c.doc_id]) for c in chunks]

    def vectors(self, chunk_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        rows = [self._dense.row(faiss_id(c)) for c in chunk_ids]
        return np.asarray(self._searcher.bundle.vectors[rows], dtype=np.float32)


class _VectorsGiven:
    """Stands in for the index's embedder inside a shard, which only ever receives query vectors: the
    coordinator embeds each query once for all shards, so no shard loads a model. It carries the index's embedder
    name, which the bundle check compares; nothing else of it is used."""

    def __init__(self, name: str, dim: int = 64) -> None:
        self._name = name
        self._dim = dim

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return 128

    @property
    def normalized(self) -> bool:
        return True

    def token_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        raise RuntimeError("a shard searches by query vector; it never tokenizes")

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        raise RuntimeError("a shard searches by query vector; it never tokenizes")

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        raise RuntimeError("a shard searches by query vector; the coordinator embeds queries")


class _Fleet:
    """Calls one method on every shard at once: threads in this process, or Ray actors."""

    def __init__(self, index: ShardedIndex, ray_address: str | None) -> None:
        n = len(index.shard_dirs)
        self._ray: Any = None
        if ray_address is None:
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="clinrag-shard")
            opened = [self._pool.submit(ShardSearcher, str(index.directory), i) for i in range(n)]
            self._local = [f.result() for f in opened]
            return
        from rag.core.ray_cluster import cause, connect

        self._ray = connect(ray_address)
        # No CPU reserved (a search is milliseconds) and spread over the nodes, so shards share the cluster's memory.
        actor = self._ray.remote(num_cpus=0, scheduling_strategy="SPREAD")(ShardSearcher)
        self._actors = [actor.remote(str(index.directory.resolve()), i) for i in range(n)]
        # Wait for every actor to load its shard, so a missing or damaged shard fails here and not mid-search.
        try:
            self._ray.get([a.size.remote() for a in self._actors])
        except Exception as exc:  # the actor's own error (a BundleError naming the shard) inside Ray's wrapper
            self.close()
            raise BundleError(
                f"{index.directory}: a shard could not be loaded on the Ray cluster: {cause(exc)}"
            ) from exc

    def call(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self._ray is not None:
            return list(self._ray.get([getattr(a, method).remote(*x) for a, x in zip(self._actors, args, strict=True)]))
        futures = [self._pool.submit(getattr(s, method), *x) for s, x in zip(self._local, args, strict=True)]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._ray is not None:
            for actor in self._actors:
                self._ray.kill(actor)
        else:
            self._pool.shutdown(wait=False)


class ShardedSearcher:
    """A loaded sharded index. `search` has `Searcher.search`'s signature and returns the same `Evidence`."""

    def __init__(
        self,
        index: ShardedIndex,
        embedder: Embedder,
        settings: RetrievalSettings | None = None,
        reranker: Reranker | None = None,
        *,
        ray_address: str | None = None,
    ) -> None:
        if embedder.name != index.embedder:
            raise BundleMismatchError(
                f"{index.directory}: index was built with embedder {index.embedder!r}, but you are using "
                f"{embedder.name!r}; query it with the embedder it was built with"
            )
        self.index = index
        self.embedder = embedder
        self.settings = settings or RetrievalSettings()
        self.absorbed = index.absorbed
        self._fleet = _Fleet(index, ray_address)
        self._reranker = RerankerOnFirstUse(reranker, self.settings.reranker, self.settings.rerank_dtype)
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        embedder: Embedder | None = None,
        settings: RetrievalSettings | None = None,
        reranker: Reranker | None = None,
        *,
        ray_address: str | None = None,
    ) -> ShardedSearcher:
        index = load_sharded(Path(index_dir))
        index_settings = IndexSettings.model_validate(index.manifest["settings"])
        return cls(index, embedder or LazyEmbedder(index_settings.embedder), settings, reranker,
                   ray_address=ray_address)  # fmt: skip

    def close(self) -> None:
        self._fleet.close()

    def clear_caches(self) -> None:
        """Forget cached query vectors (benchmarks time each mode from cold)."""
        self._vectors.clear()

    def search(
        self,
        query: str,
        k: int | None = None,
        filters: Filters | None = None,
        mode: Mode | None = None,
        rerank: bool | None = None,
    ) -> list[Evidence]:
        text, k, names = plan_search(query, k, mode, self.settings)
        depth = max(k, self.settings.depth)
        vector = self._query_vector(text) if "dense" in names else None
        per_shard = self._fleet.call("rankings", [(text, vector, depth, filters or Filters(), names)] * self.n_shards)
        rankings, doc_of, shard_of = merge_rankings(per_shard, depth)
        fused = fuse(rankings, self.settings)
        if self.settings.collapse_documents:
            fused = collapse(fused, doc_of.__getitem__)
        if self.settings.mmr and len(fused) > 1:
            pool = fused[: max(3 * k, k)]
            vectors = self._gather("vectors", [item.key for item in pool], shard_of)
            fused = maximal_marginal_relevance(pool, np.stack(vectors), k, self.settings.mmr_lambda)
        if not (self.settings.rerank if rerank is None else rerank):
            return self._records(fused[:k], shard_of)
        # The same pool as the single-index Searcher: the fused head plus each retriever's own best.
        head, rest = rerank_pool(fused, self.settings.rerank_depth, self.settings.rerank_each)
        evidence = self._records(head + rest[: max(0, k - len(head))], shard_of)  # one round trip to the shards
        return (self.reranker.rerank(text, evidence[: len(head)]) + evidence[len(head) :])[:k]

    def _records(self, items: Sequence[Fused[str]], shard_of: dict[str, int]) -> list[Evidence]:
        records = self._gather("records", [item.key for item in items], shard_of) if items else []
        return [self._evidence(item, chunk, meta) for item, (chunk, meta) in zip(items, records, strict=True)]

    @property
    def n_shards(self) -> int:
        return len(self.index.shard_dirs)

    @property
    def reranker(self) -> Reranker:
        return self._reranker.get()

    def _query_vector(self, text: str) -> npt.NDArray[np.float32]:
        cached = self._vectors.get(text)
        if cached is None:
            cached = self.embedder.embed([text])[0]
            if len(self._vectors) >= self.settings.query_cache_size:
                self._vectors.clear()
            if self.settings.query_cache_size:
                self._vectors[text] = cached
        return cached

    def _gather(self, method: str, chunk_ids: Sequence[str], shard_of: dict[str, int]) -> list[Any]:
        """`method` of each chunk's own shard, asked once per shard, results in `chunk_ids` order."""
        wanted: list[list[str]] = [[] for _ in range(self.n_shards)]
        for chunk_id in chunk_ids:
            wanted[shard_of[chunk_id]].append(chunk_id)
        answers = self._fleet.call(method, [(ids,) for ids in wanted])
        found = {c: row for ids, rows in zip(wanted, answers, strict=True) for c, row in zip(ids, rows, strict=True)}
        return [found[c] for c in chunk_ids]

    def _evidence(self, item: Fused[str], chunk: Chunk, meta: DocumentMeta) -> Evidence:
        hits = {name: RetrieverHit(rank, item.scores[name]) for name, rank in item.ranks.items()}
        return Evidence(chunk, meta, item.score, hits, self.absorbed.get(chunk.chunk_id, ()))


def merge_rankings(
    per_shard: Sequence[ShardHits], depth: int
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, str], dict[str, int]]:
    """Each retriever's best `depth` over all shards (by score, ties in FAISS-id order as within a shard), with
    each chunk's document and shard."""
    doc_of: dict[str, str] = {}
    shard_of: dict[str, int] = {}
    merged: dict[str, list[tuple[str, float]]] = {}
    for shard, hits in enumerate(per_shard):
        for name, ranking in hits.items():
            pool = merged.setdefault(name, [])  # a retriever that found nothing still takes part in fusion
            for chunk_id, doc_id, score in ranking:
                doc_of[chunk_id], shard_of[chunk_id] = doc_id, shard
                pool.append((chunk_id, score))
    for name in merged:
        merged[name] = sorted(merged[name], key=_best_first)[:depth]
    return merged, doc_of, shard_of


def _best_first(hit: tuple[str, float]) -> tuple[float, int]:
    return (-hit[1], faiss_id(hit[0]))  # ties in FAISS-id order, as every retriever orders them


def open_searcher(
    index_dir: str | Path,
    embedder: Embedder | None = None,
    settings: RetrievalSettings | None = None,
    reranker: Reranker | None = None,
    *,
    ray_address: str | None = None,
) -> Searcher | ShardedSearcher:
    """A `Searcher` for a bundle, a `ShardedSearcher` for a sharded index (`ray_address` only applies to one)."""
    from rag.index.shards import is_sharded

    if is_sharded(Path(index_dir)):
        return ShardedSearcher.load(index_dir, embedder, settings, reranker, ray_address=ray_address)
    if ray_address is not None:
        raise ConfigError(f"{index_dir}: --ray applies to sharded indexes only (built with --shards N)")
    return Searcher.load(index_dir, embedder, settings, reranker)


__all__ = ["ShardSearcher", "ShardedSearcher", "merge_rankings", "open_searcher"]
