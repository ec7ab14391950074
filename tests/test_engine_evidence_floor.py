"""The evidence a model generator is shown: reranked passages rated near the best one, not those far below it."""

from __future__ import annotations

from rag.engine import _rated_near_best
from rag.types import Chunk, DocumentMeta, Evidence, RetrieverHit


def passages(rerank: list[float | None]) -> list[Evidence]:
    meta = DocumentMeta(title="T", doc_type="guideline", source="test")
    out = []
    for i, score in enumerate(rerank):
        chunk = Chunk(f"c{i}", f"d{i}", "text", "", (), 0, 4, None, None, 1, f"h{i}")
        hits = {"fused": RetrieverHit(i + 1, 0.5)} | (
            {"rerank": RetrieverHit(i + 1, score)} if score is not None else {}
        )
        out.append(Evidence(chunk, meta, score if score is not None else 0.5, hits))
    return out


def test_passages_rated_far_below_the_best_are_not_shown() -> None:
    kept = _rated_near_best(passages([0.9, 0.5, 0.2]), 0.5)
    assert [e.chunk.chunk_id for e in kept] == ["c0", "c1"]  # 0.2 < 0.5 x 0.9
    assert len(_rated_near_best(passages([0.9, 0.5, 0.2]), 0.0)) == 3


def test_unreranked_or_empty_evidence_is_left_as_it_is() -> None:
    assert len(_rated_near_best(passages([None, None]), 0.5)) == 2
    assert len(_rated_near_best(passages([0.9, None]), 0.5)) == 2
    assert _rated_near_best([], 0.5) == []
