"""Which retrieved passages an answer may rest on: abstaining on weak retrieval, the near-best floor, numbering."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from rag.answering.prompts import EvidenceItem, evidence_item
from rag.core.types import Evidence

# Sections that describe a guideline, or send the patient elsewhere, rather than say what to do: quoted first
# they answer nothing a treatment question asked (the demo's COPD answer quoted "When to refer"; NGC answers
# quoted objectives, sources, web resources, the interventions a guideline considered and the conditions it
# covers). They still answer a question that names them.
_BOILERPLATE_SECTION = re.compile(
    r"\b(when to refer|referral|refer|sources?|references?|bibliography|methods?|methodology|objectives?|"
    r"target population|intended users|rating scheme|guideline category|clinical specialty|outcomes considered|"
    r"interventions and practices considered|disease/conditions?|conditions? addressed|clinical algorithms?|"
    r"qualifying statements|disclaimer|funding|financial disclosures?|guideline status|availability|companion "
    r"documents|patient resources|resources|description of|implementation|scope|key words|acknowledg\w+)\b",
    re.I,
)
_WORD = re.compile(r"[a-z]{4,}")
OFF_QUESTION_FACTOR = 0.5


def off_question_section(question: str, section_path: Sequence[str]) -> bool:
    """The passage's own heading is boilerplate (sources, methods, referral, ...) that the question does not ask.

    A question asks a section when it holds every word of its heading (four letters or more, compared on their
    first five): "When should I refer ...?" asks "When to refer"; a question that only mentions a disease does
    not ask "Disease/Condition(s)".
    """
    heading = section_path[-1] if section_path else ""
    if not _BOILERPLATE_SECTION.search(heading):
        return False
    asked = {w[:5] for w in _WORD.findall(question.lower())}
    named = {w[:5] for w in _WORD.findall(heading.lower())}
    return not named or not named <= asked


def demote_boilerplate(question: str, evidence: list[Evidence]) -> list[Evidence]:
    """`evidence` with off-question boilerplate sections rated OFF_QUESTION_FACTOR x as high, re-sorted (stable).

    The reranker's own score is scaled too, so the near-best floor and the extractive answer's choice of passage
    read the demoted rating.
    """
    out = []
    for e in evidence:
        if off_question_section(question, e.chunk.section_path):
            hits = dict(e.retrievers)
            if "rerank" in hits:
                hits["rerank"] = replace(hits["rerank"], score=hits["rerank"].score * OFF_QUESTION_FACTOR)
            e = replace(e, score=e.score * OFF_QUESTION_FACTOR, retrievers=hits)
        out.append(e)
    return sorted(out, key=lambda e: -e.score)


RERANKED = "reranked"


def reranker_unsure(evidence: Sequence[Evidence], min_confidence: float) -> str | None:
    """Why the reranked order should not choose the passages (its best is rated below `min_confidence`), or None.

    A reranker trained on one kind of question rates passages of another kind all near zero, and its order among
    them is noise: on NGC guideline questions the packaged one's best passage was rated below 0.1 for 67 of 88,
    and the fused order answered those better (benchmarks/RESULTS.md, issue 34).
    """
    rated = [e.retrievers["rerank"].score for e in evidence if "rerank" in e.retrievers]
    if not rated or max(rated) >= min_confidence:
        return None
    return f"the reranker is unsure of every passage (best {max(rated):.3f} < {min_confidence:g})"


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
