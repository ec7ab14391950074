"""Hybrid search over an index bundle: BM25 and dense retrievers, filters before fusion, fused evidence.

    searcher = Searcher.load("indexes/demo")
    evidence = searcher.search("first-line treatment of cystitis", k=5, filters=Filters.of(types=["guideline"]))

Each `Evidence` carries its chunk, its document's metadata, the fused score and every retriever's rank and
score, so an answer can explain why a passage was found.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.core.config import IndexSettings, RerankDtype, RetrievalSettings
from rag.core.errors import BundleMismatchError, ConfigError
from rag.core.types import Chunk, DocumentMeta, Evidence, RetrieverHit
from rag.index.dense import faiss_ids, filtered_search_parameters
from rag.index.sparse import BM25Index, CorpusStats
from rag.index.store import BundleContents, absorbed_by_chunk, check_embedder, load_bundle, read_manifest
from rag.models.embed import Embedder, LazyEmbedder
from rag.retrieval.filters import Filters
from rag.retrieval.fusion import (
    Fused,
    K,
    collapse,
    convex_combination,
    first_occurrences,
    maximal_marginal_relevance,
    reciprocal_rank_fusion,
)
from rag.retrieval.protocols import Mask, Mode, Ranking, Reranker, Retriever
from rag.text.tokenize import ClinicalTokenizer, tokenizer_from_json

MAX_QUERY_CHARS = 10_000


class RerankerOnFirstUse:
    """The reranker given, else the one `name` names (rag.retrieval.rerank.load_reranker), loaded on first use and once,
    whichever thread asks first: a searcher that never reranks never loads a model."""

    def __init__(
        self, given: Reranker | None, name: str, dtype: RerankDtype = "float32", prior_scale: float = 1.0
    ) -> None:
        self._reranker = given
        self._name = name
        self._dtype = dtype
        self._prior_scale = prior_scale
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Reranker | None:
        return self._reranker

    def get(self) -> Reranker:
        with self._lock:
            if self._reranker is None:
                from rag.retrieval.rerank import load_reranker

                self._reranker = load_reranker(self._name, dtype=self._dtype, prior_scale=self._prior_scale)
            return self._reranker


class BM25Retriever:
    name = "bm25"

    def __init__(
        self, index: BM25Index, tokenizer: ClinicalTokenizer, tiebreak: npt.NDArray[np.int64] | None = None
    ) -> None:
        self.index = index
        self.tokenizer = tokenizer
        self.tiebreak = tiebreak  # per-row key ordering equal scores (the chunk's FAISS id)

    def retrieve(self, query: str, depth: int, allowed: Mask | None = None) -> Ranking:
        return self.index.top_k(self.tokenizer.tokenize(query), depth, allowed, self.tiebreak)


class DenseRetriever:
    """FAISS search with the bundle's embedder; query vectors are cached per retriever (not globally)."""

    name = "dense"

    def __init__(
        self,
        dense_index: Any,
        chunks: Sequence[Chunk],
        embedder: Embedder,
        cache_size: int = 1024,
        *,
        rescore_from: npt.NDArray[np.float32] | None = None,
        rescore: int = 0,
    ) -> None:
        """With `rescore` > 0, `rescore` candidates per wanted hit are re-scored exactly against `rescore_from`
        (the bundle's memory-mapped vectors): IVF-PQ then ranks by true inner products of what it found."""
        self.index = dense_index
        self.embedder = embedder
        self._exact = rescore_from if rescore > 0 else None
        self._rescore = rescore
        self.ids = faiss_ids([c.chunk_id for c in chunks])
        self._row_of = {int(i): row for row, i in enumerate(self.ids)}
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_size = cache_size
        # The LRU's look-up-then-reorder is not atomic: another thread's eviction in between would raise
        # KeyError. Only the bookkeeping is locked; embedding runs outside the lock.
        self._cache_lock = threading.Lock()

    def query_vector(self, query: str) -> npt.NDArray[np.float32]:
        with self._cache_lock:
            cached = self._cache.get(query)
            if cached is not None:
                self._cache.move_to_end(query)
                return cached
        vec: npt.NDArray[np.float32] = self.embedder.embed([query])[0]
        if vec.shape[0] != self.index.d:
            raise BundleMismatchError(
                f"embedder {self.embedder.name} gives {vec.shape[0]}-dimensional vectors but the index holds "
                f"{self.index.d}-dimensional ones; query it with the embedder it was built with"
            )
        if self._cache_size:
            with self._cache_lock:
                self._cache[query] = vec
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vec

    def row(self, faiss_id: int) -> int:
        """The row of the chunk with this FAISS id."""
        return self._row_of[faiss_id]

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def retrieve(self, query: str, depth: int, allowed: Mask | None = None) -> Ranking:
        if self.index.ntotal == 0:
            return []
        return self.retrieve_vector(self.query_vector(query), depth, allowed)

    def retrieve_vector(self, vector: npt.NDArray[np.float32], depth: int, allowed: Mask | None = None) -> Ranking:
        """Rows nearest to an already embedded query (a sharded search embeds once for all shards)."""
        import faiss

        if self.index.ntotal == 0:
            return []
        vec = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        params = None
        if allowed is not None:
            keep = self.ids[allowed]
            if keep.size == 0:
                return []
            selector = faiss.IDSelectorBatch(keep)  # kept referenced: FAISS does not own it
            params = filtered_search_parameters(self.index, selector)
        wanted = min(depth * (self._rescore if self._exact is not None else 1), self.index.ntotal)
        with _single_threaded_faiss(faiss):
            scores, ids = self.index.search(vec, wanted, params=params)
        found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        if self._exact is not None and found:
            rows = np.asarray([self._row_of[i] for _, i in found])
            order = np.argsort(rows)  # sorted reads from the memory map
            exact = np.empty(len(rows), dtype=np.float32)
            exact[order] = np.asarray(self._exact[rows[order]], dtype=np.float32) @ vec[0]
            found = [(float(e), i) for e, (_, i) in zip(exact, found, strict=True)]
        # Equal scores in id order (FAISS leaves their order to the index layout), as BM25 and the shards do.
        hits = sorted(found, key=lambda hit: (-hit[0], hit[1]))[:depth]
        return [(self._row_of[i], s) for s, i in hits]


@contextmanager
def _single_threaded_faiss(faiss: Any) -> Iterator[None]:
    # One query vector: OpenMP fan-out costs more than it saves (flat search over 25k chunks: 4.9 ms with two
    # threads, 1.9 ms with one) and its spinning workers then slow the next query's embedding. The setting is
    # per calling thread in OpenMP, so concurrent searches do not interfere; it is restored afterwards.
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class Searcher:
    """A loaded bundle with its retrievers. Build with `Searcher.load`."""

    def __init__(
        self,
        bundle: BundleContents,
        embedder: Embedder,
        settings: RetrievalSettings | None = None,
        reranker: Reranker | None = None,
        *,
        bm25_stats: CorpusStats | None = None,
        absorbed: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        """`bm25_stats` and `absorbed` of a whole sharded index replace this bundle's own (rag.retrieval.sharded)."""
        check_embedder(bundle.manifest, bundle.path, embedder.name)
        index_settings = IndexSettings.model_validate(bundle.manifest["settings"])
        self.bundle = bundle
        self.settings = settings or RetrievalSettings()
        self.chunks = bundle.active_chunks
        self.metas: dict[str, DocumentMeta] = {d.doc_id: d.meta for d in bundle.documents}
        self.absorbed = absorbed_documents(bundle) if absorbed is None else absorbed
        self._reranker = RerankerOnFirstUse(
            reranker, self.settings.reranker, self.settings.rerank_dtype, self.settings.rerank_prior_scale
        )
        self._masks: OrderedDict[Filters, Mask | None] = OrderedDict()
        tokenizer = tokenizer_from_json(bundle.manifest["bm25"]["tokenizer"])
        compressed = bundle.manifest.get("dense", {}).get("built_kind") == "ivfpq"
        rescore = index_settings.dense.pq_rescore if compressed else 0
        dense = DenseRetriever(bundle.dense_index, self.chunks, embedder, self.settings.query_cache_size,
                               rescore_from=bundle.vectors, rescore=rescore)  # fmt: skip
        bm25 = BM25Index(bundle.term_counts, index_settings.bm25, bm25_stats)
        self.retrievers: dict[str, Retriever] = {"bm25": BM25Retriever(bm25, tokenizer, dense.ids), "dense": dense}

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        embedder: Embedder | None = None,
        settings: RetrievalSettings | None = None,
        reranker: Reranker | None = None,
    ) -> Searcher:
        bundle = load_bundle(Path(index_dir))
        index_settings = IndexSettings.model_validate(bundle.manifest["settings"])
        return cls(bundle, embedder or LazyEmbedder(index_settings.embedder), settings, reranker)

    def reloaded(self) -> Searcher:
        """A searcher over its directory's newest committed generation, with this one's embedder, settings and
        loaded reranker; this searcher itself when that generation is the one it holds already.

        For a searcher made by `Searcher.load`: a shard's searcher would lose the whole index's BM25 statistics.
        """
        directory = self.bundle.path
        if read_manifest(directory).get("generation") == self.bundle.manifest.get("generation"):
            return self
        return Searcher(load_bundle(directory), self.query_embedder, self.settings, self.loaded_reranker)

    @property
    def query_embedder(self) -> Embedder:
        """The embedder queries are embedded with (the bundle's own)."""
        dense = self.retrievers["dense"]
        assert isinstance(dense, DenseRetriever)
        return dense.embedder

    def search(
        self,
        query: str,
        k: int | None = None,
        filters: Filters | None = None,
        mode: Mode | None = None,
        rerank: bool | None = None,
    ) -> list[Evidence]:
        """The k best chunks for `query`; fewer when fewer pass the filters or match at all.

        With `rerank` (default: settings.rerank) the best `rerank_depth` fused chunks, and each retriever's own
        best `rerank_each` wherever fusion put them, are re-ordered by the reranker (their score becomes its
        score); any results below them keep the fused order.
        """
        text, k, names = plan_search(query, k, mode, self.settings)
        allowed = self._mask(filters or Filters())
        depth = max(k, self.settings.depth)
        rankings = {name: self.retrievers[name].retrieve(text, depth, allowed) for name in names}
        fused = self._fuse(rankings)
        if self.settings.collapse_documents:
            fused = collapse(fused, lambda row: self.chunks[row].doc_id)
        if self.settings.mmr and len(fused) > 1:
            fused = self._diversify(fused, k)
        if not (self.settings.rerank if rerank is None else rerank):
            return [self._evidence(item) for item in fused[:k]]
        # Only the head is re-read by the model; below it the fused order stands (and so do fused scores).
        head, rest = rerank_pool(fused, self.settings.rerank_depth, self.settings.rerank_each)
        reranked = self.reranker.rerank(text, [self._evidence(item) for item in head])
        return (reranked + [self._evidence(item) for item in rest[: max(0, k - len(reranked))]])[:k]

    @property
    def loaded_reranker(self) -> Reranker | None:
        """The reranker if one was given or has been loaded (a reloaded searcher keeps it)."""
        return self._reranker.loaded

    @property
    def reranker(self) -> Reranker:
        """The reranker given at construction, else the one settings.reranker names (loaded once, here)."""
        return self._reranker.get()

    def clear_caches(self) -> None:
        """Forget cached query vectors and filter masks (benchmarks time each mode from cold)."""
        self._masks.clear()
        dense = self.retrievers.get("dense")
        if isinstance(dense, DenseRetriever):
            dense.clear_cache()

    def _mask(self, filters: Filters) -> Mask | None:
        # A filter is often reused across many queries (an evaluation, a chain); its mask costs a pass over
        # every chunk, so the last few are kept.
        if filters.empty:
            return None
        mask = self._masks.get(filters)
        if mask is None:
            mask = filters.mask(self.chunks, self.metas)
            self._masks[filters] = mask
            if len(self._masks) > 32:
                self._masks.popitem(last=False)
        return mask

    def _fuse(self, rankings: dict[str, Ranking]) -> list[Fused[int]]:
        return fuse(rankings, self.settings)

    def _diversify(self, fused: list[Fused[int]], k: int) -> list[Fused[int]]:
        pool = fused[: max(3 * k, k)]
        vectors = np.asarray(self.bundle.vectors[[item.key for item in pool]], dtype=np.float32)
        return maximal_marginal_relevance(pool, vectors, k, self.settings.mmr_lambda)

    def _evidence(self, item: Fused[int]) -> Evidence:
        chunk = self.chunks[item.key]
        hits = {name: RetrieverHit(rank, item.scores[name]) for name, rank in item.ranks.items()}
        return Evidence(chunk, self.metas[chunk.doc_id], item.score, hits, self.absorbed.get(chunk.chunk_id, ()))


def rerank_pool(fused: list[Fused[K]], depth: int, each: int) -> tuple[list[Fused[K]], list[Fused[K]]]:
    """(what the reranker reads, the rest in fused order): the fused top `depth`, then any candidate below it
    that one retriever ranked in its own top `each`."""
    head = fused[:depth] + [item for item in fused[depth:] if any(rank <= each for rank in item.ranks.values())]
    taken = {item.key for item in head}
    return head, [item for item in fused[depth:] if item.key not in taken]


def plan_search(
    query: str, k: int | None, mode: Mode | None, settings: RetrievalSettings
) -> tuple[str, int, list[str]]:
    """(cleaned query, k, retriever names) for a search, or a clear error."""
    text = clean_query(query)
    k = settings.k if k is None else k
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")
    mode = mode or settings.mode
    names = {"hybrid": ["bm25", "dense"], "bm25": ["bm25"], "dense": ["dense"]}.get(mode)
    if names is None:
        raise ConfigError(f"unknown search mode {mode!r}; use hybrid, bm25 or dense")
    return text, k, names


def fuse(rankings: Mapping[str, Sequence[tuple[K, float]]], settings: RetrievalSettings) -> list[Fused[K]]:
    if len(rankings) == 1:
        # One retriever: keep its own scores, so BM25 and cosine values stay interpretable.
        ((name, ranking),) = rankings.items()
        unique = first_occurrences(ranking)
        return [Fused(key, score, {name: rank}, {name: score}) for rank, (key, score) in enumerate(unique, 1)]
    if settings.fusion == "convex":
        return convex_combination(rankings, settings.weights)
    return reciprocal_rank_fusion(rankings, k=settings.rrf_k, weights=settings.weights)


def absorbed_documents(bundle: BundleContents) -> dict[str, tuple[str, ...]]:
    return absorbed_by_chunk(bundle.chunks)


def clean_query(query: str) -> str:
    """Printable text, at most MAX_QUERY_CHARS; refuses a query with no letters or digits."""
    if not isinstance(query, str):
        raise ConfigError(f"query must be text, got {type(query).__name__}")
    text = "".join(ch if ch.isprintable() else " " for ch in query[: MAX_QUERY_CHARS * 2])
    text = " ".join(text.split())[:MAX_QUERY_CHARS]
    if not any(ch.isalnum() for ch in text):
        raise ConfigError("query is empty or has no letters or digits; ask a question in words")
    return text


__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "Evidence",
    "Filters",
    "Reranker",
    "Searcher",
    "clean_query",
]
