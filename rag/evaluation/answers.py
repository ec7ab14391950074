"""Answer evaluation on judged questions: does the answer come from, and say what, the judged passage?

For each question the engine answers as a user would call it. Per answer:
- cited precision: the share of its cited references whose document, or a document the passage absorbed as a
  duplicate, is judged relevant (pooled over all answers: cited relevant / cited);
- hit: it cites at least one relevant document;
- content-word F1 of the joined suggestions against the judged passage (lower-cased words, stop words and
  citation keys removed, counted with multiplicity as SQuAD's token F1 does);
- abstained, fell back to the extractive answer, seconds.
An abstaining or failing answer cites nothing and scores F1 0: it counts against hit rate and F1, not precision.

Cited precision and hit rate are also reported with identical questions pooled ("_pooled"): some sets (MedQuAD)
ask the same question once per source and judge each copy against its own source's document only, so an answer
citing another source's judged answer to the very same question scores as a miss. Pooled, a document judged for
any question with the same text (case and spacing aside) counts as relevant. The strict figures stay the headline.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rag.answering.answer import Answer
from rag.core.errors import ClinragError
from rag.datasets.beir import Qrels
from rag.text.tokenize import ENGLISH_STOPWORDS

_WORD = re.compile(r"[a-z0-9]+")
_KEY = re.compile(r"\[E\d+\]")


@dataclass(frozen=True)
class AnswerCase:
    query_id: str
    question: str
    judged: Mapping[str, int]  # document id -> grade
    passage: str  # the text of the best-graded judged document
    # Documents judged relevant to another question of the same text (and not to this one): credited when pooled.
    judged_for_same_text: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AnswerRecord:
    query_id: str
    cited: int
    cited_relevant: int
    hit: bool
    abstained: bool
    fallback: bool
    f1: float
    seconds: float
    error: str | None = None
    cited_relevant_pooled: int = 0  # counting documents judged for an identical question
    hit_pooled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "f1": round(self.f1, 4), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class AnswerReport:
    questions: int
    cited_precision: float
    hit_rate: float
    abstention_rate: float
    fallback_rate: float
    content_f1: float
    seconds_p50: float
    seconds_p95: float
    errors: int
    cited_precision_pooled: float  # identical questions' judgements pooled (module docstring)
    hit_rate_pooled: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(_KEY.sub(" ", text).lower()) if w not in ENGLISH_STOPWORDS]


def content_f1(prediction: str, reference: str) -> float:
    predicted, expected = Counter(content_words(prediction)), Counter(content_words(reference))
    overlap = sum((predicted & expected).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(predicted.values())
    recall = overlap / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def same_text(question: str) -> str:
    return " ".join(question.lower().split())


def build_cases(
    queries: Mapping[str, str],
    qrels: Qrels,
    corpus_text: Mapping[str, str],
    *,
    qtypes: Mapping[str, str] | None = None,
    qtype: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[AnswerCase]:
    """Judged questions in file order (of one question type when asked), each with its judged passage's text;
    the first `offset` matching questions are skipped."""
    judged_by_text: dict[str, set[str]] = {}
    for qid, question in queries.items():
        relevant = {doc for doc, grade in qrels.get(qid, {}).items() if grade > 0}
        judged_by_text.setdefault(same_text(question), set()).update(relevant)
    cases: list[AnswerCase] = []
    skipped = 0
    for qid, question in queries.items():
        judged = {doc: grade for doc, grade in qrels.get(qid, {}).items() if grade > 0}
        if not judged or (qtype is not None and (qtypes or {}).get(qid) != qtype):
            continue
        if skipped < offset:
            skipped += 1
            continue
        best = max(judged, key=lambda doc: (judged[doc], doc in corpus_text))
        twins = frozenset(judged_by_text[same_text(question)] - judged.keys())
        cases.append(AnswerCase(qid, question, judged, corpus_text.get(best, ""), twins))
        if limit is not None and len(cases) == limit:
            break
    return cases


def cited_documents(answer: Answer) -> list[set[str]]:
    """Per cited reference, the documents it stands for: its own and those whose duplicate passage it absorbed."""
    return [{r.doc_id, *(o.doc_id for o in r.also_in)} for r in answer.references if r.cited]


def score_answer(case: AnswerCase, answer: Answer, seconds: float) -> AnswerRecord:
    cited = cited_documents(answer)
    relevant = sum(1 for docs in cited if docs & case.judged.keys())
    pooled = sum(1 for docs in cited if docs & (case.judged.keys() | case.judged_for_same_text))
    joined = " ".join(s.text for s in answer.suggestions)
    return AnswerRecord(
        query_id=case.query_id,
        cited=len(cited),
        cited_relevant=relevant,
        hit=relevant > 0,
        abstained=answer.abstained,
        fallback=answer.fallback is not None,
        f1=content_f1(joined, case.passage) if joined else 0.0,
        seconds=seconds,
        cited_relevant_pooled=pooled,
        hit_pooled=pooled > 0,
    )


def evaluate_answers(
    cases: Sequence[AnswerCase],
    ask: Callable[[str], Answer],
    *,
    progress: bool = False,
) -> list[AnswerRecord]:
    """Ask every question once; a question that fails is recorded (abstained, error) and the run goes on."""
    from tqdm import tqdm

    records = []
    for case in tqdm(cases, desc="answers", unit="question", disable=not progress, dynamic_ncols=True):
        started = time.perf_counter()
        try:
            answer = ask(case.question)
        except (ClinragError, ValueError, RuntimeError) as exc:
            seconds = time.perf_counter() - started
            records.append(AnswerRecord(case.query_id, 0, 0, False, True, False, 0.0, seconds, f"{exc}"[:300]))
            continue
        records.append(score_answer(case, answer, time.perf_counter() - started))
    return records


def summarize(records: Iterable[AnswerRecord]) -> AnswerReport:
    rows = list(records)
    n = len(rows)
    cited = sum(r.cited for r in rows)
    seconds = [r.seconds for r in rows]
    return AnswerReport(
        questions=n,
        cited_precision=sum(r.cited_relevant for r in rows) / cited if cited else 0.0,
        hit_rate=sum(r.hit for r in rows) / n if n else 0.0,
        abstention_rate=sum(r.abstained for r in rows) / n if n else 0.0,
        fallback_rate=sum(r.fallback for r in rows) / n if n else 0.0,
        content_f1=float(np.mean([r.f1 for r in rows])) if rows else 0.0,
        seconds_p50=float(np.percentile(seconds, 50)) if seconds else 0.0,
        seconds_p95=float(np.percentile(seconds, 95)) if seconds else 0.0,
        errors=sum(r.error is not None for r in rows),
        cited_precision_pooled=sum(r.cited_relevant_pooled for r in rows) / cited if cited else 0.0,
        hit_rate_pooled=sum(r.hit_pooled for r in rows) / n if n else 0.0,
    )
