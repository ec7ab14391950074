"""Answers on guideline questions (the NGC format): is the judged guideline found, its recommendation retrieved,
cited, and said?

Per question, from the top 10 passages of a search without and with reranking:
- document recall@10: a passage of the judged guideline is among them;
- evidence recall@10: the judged recommendation is inside one of them: its words appear in the passage in order
  (case, punctuation and Markdown aside), or the passage holds at least 90% of its distinct content words (a long
  recommendation split across chunks, or re-wrapped);
and from the engine's answer, asked as `clinrag ask` would:
- hit: a cited reference is the judged guideline; cited precision: cited references that are (pooled);
- answer-term recall: the share of `answer_terms` found in the joined suggestions (case-insensitive, spacing
  folded); all terms: every one is;
- abstained, fell back to the extractive answer, seconds.
A question whose search or answer fails is recorded with its error and scores 0; the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rag.answering.answer import Answer
from rag.core.errors import ClinragError
from rag.core.types import Evidence
from rag.datasets.guideline_questions import GuidelineQuestion, contains_evidence
from rag.evaluation.answers import cited_documents

TOP_K = 10

Search = Callable[[str, bool], Sequence[Evidence]]  # (question, rerank) -> the top passages, best first


@dataclass(frozen=True)
class GuidelineRecord:
    question_id: str
    doc_recall: bool  # judged guideline among the top 10 passages, fused order
    doc_recall_reranked: bool
    evidence_recall: bool  # judged recommendation inside a top-10 passage, fused order
    evidence_recall_reranked: bool
    cited: int
    cited_judged: int
    hit: bool
    term_recall: float
    all_terms: bool
    abstained: bool
    fallback: bool
    seconds: float
    error: str | None = None
    # What was answered, for reading misses: each suggestion, and the documents each cited reference stands for.
    suggestions: tuple[str, ...] = ()
    cited_documents: tuple[tuple[str, ...], ...] = ()
    ranking: str = ""  # the order that chose the answer's passages (Answer.ranking)

    @classmethod
    def failed(cls, question_id: str, error: str) -> GuidelineRecord:
        return cls(question_id, False, False, False, False, 0, 0, False, 0.0, False, True, False, 0.0, error)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "term_recall": round(self.term_recall, 4), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class GuidelineReport:
    questions: int
    doc_recall_at_10: float
    doc_recall_at_10_reranked: float
    evidence_recall_at_10: float
    evidence_recall_at_10_reranked: float
    hit_rate: float
    cited_precision: float
    answer_term_recall: float
    all_terms_rate: float
    abstention_rate: float
    fallback_rate: float
    fused_order_rate: float  # answers whose passages the fused order chose (reranking off, or the reranker unsure)
    seconds_p50: float
    seconds_p95: float
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def terms_found(terms: Sequence[str], text: str) -> list[bool]:
    folded = " ".join(text.lower().split())
    return [" ".join(term.lower().split()) in folded for term in terms]


def retrieval_facts(question: GuidelineQuestion, passages: Sequence[Evidence]) -> tuple[bool, bool]:
    top = list(passages)[:TOP_K]
    found_doc = any(e.chunk.doc_id == question.doc_id for e in top)
    found_evidence = any(contains_evidence(e.chunk.text, question.evidence) for e in top)
    return found_doc, found_evidence


def score_question(question: GuidelineQuestion, search: Search, ask: Callable[[str], Answer]) -> GuidelineRecord:
    fused = retrieval_facts(question, search(question.text, False))
    reranked = retrieval_facts(question, search(question.text, True))
    started = time.perf_counter()
    answer = ask(question.text)
    seconds = time.perf_counter() - started
    cited = cited_documents(answer)
    judged = sum(1 for docs in cited if question.doc_id in docs)
    found = terms_found(question.answer_terms, " ".join(s.text for s in answer.suggestions))
    return GuidelineRecord(
        question_id=question.question_id,
        doc_recall=fused[0],
        doc_recall_reranked=reranked[0],
        evidence_recall=fused[1],
        evidence_recall_reranked=reranked[1],
        cited=len(cited),
        cited_judged=judged,
        hit=judged > 0,
        term_recall=sum(found) / len(found),
        all_terms=all(found),
        abstained=answer.abstained,
        fallback=answer.fallback is not None,
        seconds=seconds,
        suggestions=tuple(s.text for s in answer.suggestions),
        cited_documents=tuple(tuple(sorted(docs)) for docs in cited),
        ranking=answer.ranking,
    )


def evaluate_guideline_answers(
    questions: Sequence[GuidelineQuestion],
    search: Search,
    ask: Callable[[str], Answer],
    *,
    progress: bool = False,
) -> list[GuidelineRecord]:
    """Score every question once; one that fails is recorded (abstained, its error) and the run goes on."""
    from tqdm import tqdm

    records = []
    for question in tqdm(questions, desc="questions", unit="question", disable=not progress, dynamic_ncols=True):
        try:
            records.append(score_question(question, search, ask))
        except (ClinragError, ValueError, RuntimeError) as exc:
            records.append(GuidelineRecord.failed(question.question_id, f"{exc}"[:300]))
    return records


def summarize_guideline_answers(records: Iterable[GuidelineRecord]) -> GuidelineReport:
    rows = list(records)
    n = len(rows) or 1
    cited = sum(r.cited for r in rows)
    seconds = [r.seconds for r in rows if r.error is None] or [0.0]
    return GuidelineReport(
        questions=len(rows),
        doc_recall_at_10=sum(r.doc_recall for r in rows) / n,
        doc_recall_at_10_reranked=sum(r.doc_recall_reranked for r in rows) / n,
        evidence_recall_at_10=sum(r.evidence_recall for r in rows) / n,
        evidence_recall_at_10_reranked=sum(r.evidence_recall_reranked for r in rows) / n,
        hit_rate=sum(r.hit for r in rows) / n,
        cited_precision=sum(r.cited_judged for r in rows) / cited if cited else 0.0,
        answer_term_recall=float(np.mean([r.term_recall for r in rows])) if rows else 0.0,
        all_terms_rate=sum(r.all_terms for r in rows) / n,
        abstention_rate=sum(r.abstained for r in rows) / n,
        fallback_rate=sum(r.fallback for r in rows) / n,
        fused_order_rate=sum(r.ranking.startswith("fused") for r in rows) / n,
        seconds_p50=float(np.percentile(seconds, 50)),
        seconds_p95=float(np.percentile(seconds, 95)),
        errors=sum(r.error is not None for r in rows),
    )
