"""The retrieval roles, one protocol each: what searches a whole index (`EvidenceSearch`, met by `Searcher` and
`ShardedSearcher`), what ranks chunk rows inside one (`Retriever`), what re-orders fused evidence (`Reranker`) and
what scores (question, passage) pairs (`PairScorer`). Fakes for tests: `rag.testing`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rag.core.types import Evidence
from rag.retrieval.filters import Filters

Mode = Literal["hybrid", "bm25", "dense"]
Mask = npt.NDArray[np.bool_]
Ranking = list[tuple[int, float]]


class EvidenceSearch(Protocol):
    """Searches an index, single bundle or sharded: the k best passages for a query, as `Evidence`."""

    def search(
        self,
        query: str,
        k: int | None = None,
        filters: Filters | None = None,
        mode: Mode | None = None,
        rerank: bool | None = None,
    ) -> list[Evidence]: ...


class Retriever(Protocol):
    """Ranks chunk rows for a query; rows outside `allowed` are never returned."""

    name: str

    def retrieve(self, query: str, depth: int, allowed: Mask | None = None) -> Ranking: ...


class Reranker(Protocol):
    """Re-orders fused evidence, best first (rag.retrieval.rerank: the trained cross-encoder; rag.testing: a fake)."""

    def rerank(self, query: str, evidence: list[Evidence]) -> list[Evidence]: ...


@runtime_checkable
class PairScorer(Protocol):
    """Relevance of the second text to the first (a question), one score per pair, higher is better."""

    name: str

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...
