"""Search over an index bundle: BM25, dense, or both fused by reciprocal rank.

This is the first cut that the index-building work needs to prove a bundle answers queries; the query
engine (filters, fusion options, evidence keys) grows from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rag.config import IndexSettings
from rag.dense import faiss_id, search_dense
from rag.embed import Embedder, LazyEmbedder
from rag.errors import ConfigError
from rag.sparse import BM25Index
from rag.store import BundleContents, DocumentRecord, check_embedder, load_bundle
from rag.tokenize import tokenizer_from_json
from rag.types import Chunk

Mode = Literal["hybrid", "bm25", "dense"]
MAX_QUERY_CHARS = 10_000


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    document: DocumentRecord
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk.chunk_id,
            "doc_id": self.chunk.doc_id,
            "title": self.document.meta.title,
            "breadcrumb": self.chunk.breadcrumb,
            "type": self.document.meta.doc_type,
            "source": self.document.meta.source,
            "year": self.document.meta.year,
            "url": self.document.meta.url,
            "pages": [self.chunk.page_start, self.chunk.page_end] if self.chunk.page_start else None,
            "score": round(self.score, 6),
            "bm25_rank": self.bm25_rank,
            "dense_rank": self.dense_rank,
            "text": self.chunk.text,
        }


class Searcher:
    """A loaded bundle plus the embedder and tokenizer it was built with."""

    def __init__(self, bundle: BundleContents, embedder: Embedder) -> None:
        check_embedder(bundle.manifest, bundle.path, embedder.name)
        self.bundle = bundle
        self.embedder = embedder
        self.chunks = bundle.active_chunks
        self.documents = {d.doc_id: d for d in bundle.documents}
        bm25 = bundle.manifest["bm25"]
        self.tokenizer = tokenizer_from_json(bm25["tokenizer"])
        self.bm25 = BM25Index(bundle.term_counts, IndexSettings.model_validate(bundle.manifest["settings"]).bm25)
        self._row_of_faiss_id = {faiss_id(c.chunk_id): i for i, c in enumerate(self.chunks)}

    @classmethod
    def load(cls, index_dir: str | Path, embedder: Embedder | None = None) -> Searcher:
        bundle = load_bundle(Path(index_dir))
        settings = IndexSettings.model_validate(bundle.manifest["settings"])
        return cls(bundle, embedder or LazyEmbedder(settings.embedder))

    def search(self, query: str, k: int = 5, mode: Mode = "hybrid", depth: int = 50, rrf_k: int = 60) -> list[Hit]:
        text = _clean_query(query)
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        ranked: dict[str, list[tuple[int, float]]] = {}
        if mode in ("bm25", "hybrid"):
            ranked["bm25"] = self.bm25.top_k(self.tokenizer.tokenize(text), max(k, depth))
        if mode in ("dense", "hybrid"):
            ranked["dense"] = self._dense(text, max(k, depth))
        if mode not in ("bm25", "dense", "hybrid"):
            raise ConfigError(f"unknown search mode {mode!r}; use hybrid, bm25 or dense")
        return self._fuse(ranked, k, rrf_k)

    def _dense(self, text: str, k: int) -> list[tuple[int, float]]:
        query = self.embedder.embed([text])
        scores, ids = search_dense(self.bundle.dense_index, query, k)
        return [(self._row_of_faiss_id[int(i)], float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    def _fuse(self, ranked: dict[str, list[tuple[int, float]]], k: int, rrf_k: int) -> list[Hit]:
        fused: dict[int, float] = {}
        ranks: dict[str, dict[int, int]] = {name: {} for name in ranked}
        for name, rows in ranked.items():
            for rank, (row, score) in enumerate(rows, start=1):
                ranks[name].setdefault(row, rank)
                single = score if len(ranked) == 1 else 1.0 / (rrf_k + rank)
                fused.setdefault(row, 0.0)
                if ranks[name][row] == rank:  # a row listed twice by one retriever counts once
                    fused[row] += single
        order = sorted(fused, key=lambda row: (-fused[row], row))[:k]
        return [
            Hit(
                chunk=self.chunks[row],
                document=self.documents[self.chunks[row].doc_id],
                score=fused[row],
                bm25_rank=ranks.get("bm25", {}).get(row),
                dense_rank=ranks.get("dense", {}).get(row),
            )
            for row in order
        ]


def _clean_query(query: str) -> str:
    if not isinstance(query, str):
        raise ConfigError(f"query must be text, got {type(query).__name__}")
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in query).strip()
    if not any(ch.isalnum() for ch in text):
        raise ConfigError("query is empty or has no letters or digits; ask a question in words")
    return text[:MAX_QUERY_CHARS]
