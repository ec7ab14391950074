"""Which retrieved passages an answer may rest on: abstaining on weak retrieval, the near-best floor, numbering."""

from __future__ import annotations

from collections.abc import Sequence

from rag.answering.prompts import EvidenceItem, evidence_item
from rag.core.types import Evidence


def evidence_items(evidence: Sequence[Evidence]) -> list[EvidenceItem]:
    """The passages numbered E1, E2, ... as a prompt shows them."""
    return [evidence_item(f"E{i}", e) for i, e in enumerate(evidence, 1)]


def rated_near_best(evidence: list[Evidence], floor: float) -> list[Evidence]:
    """The reranked passages rated at least `floor` x the best one's probability (all of them when not reranked).

    A passage the reranker rates far below the best is about something else; a small model shown it may quote it
    (the demo's cystitis answer quoted an H. pylori regimen from the third passage), and the support check cannot
    object: the quote is in the passage it cites. The extractive answer quotes passages above `passage_floor`, a
    second one only when rated within 0.8 of the best; a model cites whatever it is shown, and `model_passage_floor`
    can narrow what it is shown further.
    """
    if not evidence or not all("rerank" in e.retrievers for e in evidence):
        return evidence
    best = max(e.retrievers["rerank"].score for e in evidence)
    return [e for e in evidence if e.retrievers["rerank"].score >= floor * best]


def weak_retrieval(evidence: Sequence[Evidence], min_score: float) -> str | None:
    """Why the evidence is too weak to answer from (nothing found, or no passage close enough), else None."""
    if not evidence:
        return "no passage in the index matches the question"
    dense = [e.retrievers["dense"].score for e in evidence if "dense" in e.retrievers]
    if dense and max(dense) < min_score:
        return f"the closest passage is only weakly related (similarity {max(dense):.2f} < {min_score:.2f})"
    return None
