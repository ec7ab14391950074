"""Answers to patient cases: does the first suggestion name an option the patient can take, and never one the
patient's facts rule out?

Per case, from the engine's answer to the question with the case's patient:
- right first: the first suggestion names an `expected` option and names no `excluded` one as an option to give
  (naming it in a warning, "DOACs are contraindicated ...; these patients need warfarin", is right);
- excluded first: the first suggestion offers an excluded option;
- excluded unflagged: a later suggestion offers an excluded option and carries no patient flag (allergy,
  cross-reactivity, current medication, duplicate class, contraindication);
- hit: a cited reference is the case's guideline; abstained; fell back to the extractive answer; seconds.
Control cases (no `excluded`) check that the patient's facts do not push a right first choice aside.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, get_args

import numpy as np

from rag.answering.answer import Answer, Suggestion
from rag.answering.patient import FlagKind, Patient
from rag.core.errors import ClinragError
from rag.datasets.patient_cases import PatientCase
from rag.evaluation.answers import cited_documents
from rag.evaluation.guideline_answers import terms_found

# The flags the engine puts on a suggestion for this patient: its drug checks, and contraindications in the evidence.
PATIENT_FLAGS = frozenset({*get_args(FlagKind), "contraindication"})
# A sentence that names an option to warn against it, not to give it.
_WARNS = re.compile(
    r"\b(contraindicat\w*|avoid\w*|do not|should not|must not|not (?:be )?(?:used|recommended|given|offered))\b", re.I
)

Ask = Callable[[str, Patient], Answer]


@dataclass(frozen=True)
class CaseRecord:
    case_id: str
    control: bool
    right_first: bool
    excluded_first: bool
    excluded_unflagged: int
    hit: bool
    abstained: bool
    fallback: bool
    seconds: float
    error: str | None = None
    suggestions: tuple[str, ...] = ()
    flags: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def failed(cls, case: PatientCase, error: str) -> CaseRecord:
        return cls(case.case_id, not case.excluded, False, False, 0, False, True, False, 0.0, error)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class CaseReport:
    cases: int
    ruled_out_cases: int
    right_first_rate: float  # every case
    right_first_rate_ruled_out: float  # cases whose patient rules an option out
    right_first_rate_controls: float
    excluded_first_rate: float
    excluded_unflagged_rate: float  # answers with a later, unflagged excluded option
    hit_rate: float
    abstention_rate: float
    fallback_rate: float
    seconds_p50: float
    seconds_p95: float
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def offers_excluded(case: PatientCase, suggestion: Suggestion) -> bool:
    """The suggestion names an excluded option, and not in a warning against it."""
    return any(terms_found(case.excluded, suggestion.text)) and not _WARNS.search(suggestion.text)


def score_case(case: PatientCase, answer: Answer, seconds: float) -> CaseRecord:
    first = answer.suggestions[0] if answer.suggestions else None
    excluded_first = first is not None and offers_excluded(case, first)
    right_first = first is not None and any(terms_found(case.expected, first.text)) and not excluded_first
    unflagged = sum(
        1
        for s in answer.suggestions[1:]
        if offers_excluded(case, s) and not any(f.kind in PATIENT_FLAGS for f in s.flags)
    )
    return CaseRecord(
        case_id=case.case_id,
        control=not case.excluded,
        right_first=right_first,
        excluded_first=excluded_first,
        excluded_unflagged=unflagged,
        hit=any(case.doc_id in docs for docs in cited_documents(answer)),
        abstained=answer.abstained,
        fallback=answer.fallback is not None,
        seconds=seconds,
        suggestions=tuple(s.text for s in answer.suggestions),
        flags=tuple(tuple(f.kind for f in s.flags) for s in answer.suggestions),
    )


def evaluate_patient_cases(cases: Sequence[PatientCase], ask: Ask, *, progress: bool = False) -> list[CaseRecord]:
    """Ask every case once with its patient; one that fails is recorded (abstained, its error) and the run goes on."""
    from tqdm import tqdm

    records = []
    for case in tqdm(cases, desc="cases", unit="case", disable=not progress, dynamic_ncols=True):
        started = time.perf_counter()
        try:
            answer = ask(case.text, case.patient)
        except (ClinragError, ValueError, RuntimeError) as exc:
            records.append(CaseRecord.failed(case, f"{exc}"[:300]))
            continue
        records.append(score_case(case, answer, time.perf_counter() - started))
    return records


def summarize_patient_cases(records: Iterable[CaseRecord]) -> CaseReport:
    rows = list(records)
    ruled_out = [r for r in rows if not r.control]
    controls = [r for r in rows if r.control]

    def rate(part: Sequence[CaseRecord], hit: Callable[[CaseRecord], bool]) -> float:
        return sum(hit(r) for r in part) / len(part) if part else 0.0

    seconds = [r.seconds for r in rows if r.error is None] or [0.0]
    return CaseReport(
        cases=len(rows),
        ruled_out_cases=len(ruled_out),
        right_first_rate=rate(rows, lambda r: r.right_first),
        right_first_rate_ruled_out=rate(ruled_out, lambda r: r.right_first),
        right_first_rate_controls=rate(controls, lambda r: r.right_first),
        excluded_first_rate=rate(ruled_out, lambda r: r.excluded_first),
        excluded_unflagged_rate=rate(ruled_out, lambda r: r.excluded_unflagged > 0),
        hit_rate=rate(rows, lambda r: r.hit),
        abstention_rate=rate(rows, lambda r: r.abstained),
        fallback_rate=rate(rows, lambda r: r.fallback),
        seconds_p50=float(np.percentile(seconds, 50)),
        seconds_p95=float(np.percentile(seconds, 95)),
        errors=sum(r.error is not None for r in rows),
    )
