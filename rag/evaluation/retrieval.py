"""Retrieval evaluation on BEIR-format data: nDCG@10, Recall@10, Recall@100, MRR@10 per search mode.

Results are chunk-level; a document counts at the rank of its best chunk, as qrels judge documents, and a chunk
that absorbed duplicates of other documents' passages stands for those documents too, at its rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.errors import ClinragError
from rag.datasets.beir import Qrels
from rag.evaluation.metrics import Ranked, mrr_at_k, ndcg_at_k, recall_at_k, unique_groups

if TYPE_CHECKING:
    from rag.retrieval.search import Searcher
    from rag.retrieval.sharded import ShardedSearcher

# (query, k) -> document ids best first; an entry may be a group of ids sharing a rank (a chunk and the
# documents whose duplicate passages it absorbed)
SearchFn = Callable[[str, int], Ranked]


@dataclass(frozen=True)
class RetrievalTask:
    queries: dict[str, str]
    qrels: Qrels

    def limited(self, limit: int | None) -> RetrievalTask:
        ids = [q for q in self.queries if q in self.qrels]
        if limit is not None:
            ids = ids[:limit]
        return RetrievalTask({q: self.queries[q] for q in ids}, {q: self.qrels[q] for q in ids})


@dataclass(frozen=True)
class ModeScores:
    mode: str
    queries: int
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    latency_ms_p50: float
    latency_ms_p95: float
    failed_queries: int = 0
    per_query: dict[str, float] = field(default_factory=dict, repr=False)  # nDCG@10 by query id

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "queries": self.queries,
            "ndcg@10": round(self.ndcg_at_10, 4),
            "recall@10": round(self.recall_at_10, 4),
            "recall@100": round(self.recall_at_100, 4),
            "mrr@10": round(self.mrr_at_10, 4),
            "latency_ms": {"p50": round(self.latency_ms_p50, 2), "p95": round(self.latency_ms_p95, 2)},
            "failed_queries": self.failed_queries,
        }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def evaluate(task: RetrievalTask, search: SearchFn, mode: str, depth: int = 100) -> ModeScores:
    """Run every query once; a query that fails scores zero and is counted, never stops the run."""
    ndcg: list[float] = []
    r10: list[float] = []
    r100: list[float] = []
    mrr: list[float] = []
    latency: list[float] = []
    per_query: dict[str, float] = {}
    failed = 0
    for qid, text in task.queries.items():
        judged = task.qrels[qid]
        started = time.perf_counter()
        try:
            ranked = unique_groups(search(text, depth))
        except ClinragError:
            ranked, failed = [], failed + 1
        latency.append((time.perf_counter() - started) * 1000)
        per_query[qid] = ndcg_at_k(ranked, judged, 10)
        ndcg.append(per_query[qid])
        r10.append(recall_at_k(ranked, judged, 10))
        r100.append(recall_at_k(ranked, judged, 100))
        mrr.append(mrr_at_k(ranked, judged, 10))
    n = len(task.queries)
    return ModeScores(
        mode=mode,
        queries=n,
        ndcg_at_10=_mean(ndcg),
        recall_at_10=_mean(r10),
        recall_at_100=_mean(r100),
        mrr_at_10=_mean(mrr),
        latency_ms_p50=float(np.percentile(latency, 50)) if latency else 0.0,
        latency_ms_p95=float(np.percentile(latency, 95)) if latency else 0.0,
        failed_queries=failed,
        per_query=per_query,
    )


def doc_search(searcher: Searcher | ShardedSearcher, mode: str, *, credit_duplicates: bool = True) -> SearchFn:
    """Ranked document ids; a chunk stands for its own document and, at the same rank, each one it absorbed."""
    rerank = mode.endswith("+rerank")
    base = mode.removesuffix("+rerank")

    def search(query: str, k: int) -> Ranked:
        evidence = searcher.search(query, k=k, mode=base, rerank=rerank)  # type: ignore[arg-type]
        return [(e.chunk.doc_id, *(e.also_in if credit_duplicates else ())) for e in evidence]

    return search
