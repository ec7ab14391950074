"""Patient cases: a question, a patient whose facts rule an option out, and what the first suggestion must name.

    {"_id": "pc-01", "text": "Which anticoagulant for her atrial fibrillation?",
     "patient": {"conditions": ["atrial fibrillation", "mechanical mitral valve"]},
     "doc_id": "atrial-fibrillation-anticoagulation", "expected": ["warfarin"],
     "excluded": ["doac", "apixaban"], "evidence": "DOACs are contraindicated ...", "reason": "mechanical valve"}

A right answer's first suggestion names one of `expected` and none of `excluded` (case-insensitive); a case with
no `excluded` is a control (the patient's facts change nothing). A bad line is reported with its file and line
number, and the set is refused rather than scored in part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rag.answering.patient import Patient
from rag.core.errors import ConfigError
from rag.core.files import read_jsonl_objects

REQUIRED_FIELDS = ("_id", "text", "patient", "doc_id", "expected", "excluded")


@dataclass(frozen=True)
class PatientCase:
    case_id: str
    text: str
    patient: Patient
    doc_id: str  # the guideline that answers it
    expected: tuple[str, ...]  # any of these, named by the first suggestion, is right
    excluded: tuple[str, ...]  # the options the patient rules out; empty for a control case
    evidence: str = ""
    reason: str = ""


def read_patient_cases(path: str | Path) -> list[PatientCase]:
    """Every case of the file, in file order; ConfigError naming the file, line and fix on a bad one."""
    file = Path(path)
    rows = read_jsonl_objects(file, "patient case set")
    if not rows:
        raise ConfigError(f"{file}: no cases; expected one JSON object a line with fields {', '.join(REQUIRED_FIELDS)}")
    cases: list[PatientCase] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        case = _case(f"{file}: case {number}", row)
        if case.case_id in seen:
            raise ConfigError(f"{file}: case {number}: duplicate _id {case.case_id!r}; each case needs its own")
        seen.add(case.case_id)
        cases.append(case)
    return cases


def _case(where: str, row: dict[str, object]) -> PatientCase:
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}; cases need {', '.join(REQUIRED_FIELDS)}")
    texts = {name: row[name] for name in ("_id", "text", "doc_id")}
    blank = [name for name, value in texts.items() if not isinstance(value, str) or not value.strip()]
    if blank:
        raise ConfigError(f"{where}: {', '.join(blank)} must be non-empty strings")
    expected, excluded = _terms(where, "expected", row["expected"]), _terms(where, "excluded", row["excluded"])
    if not expected:
        raise ConfigError(f"{where}: expected must name at least one option a right first suggestion names")
    patient = row["patient"]
    if not isinstance(patient, dict):
        raise ConfigError(f'{where}: patient must be an object like {{"allergies": ["penicillin"]}}')
    return PatientCase(
        case_id=str(row["_id"]),
        text=str(row["text"]),
        patient=Patient.from_mapping(patient, origin=f"{where}: patient"),
        doc_id=str(row["doc_id"]),
        expected=expected,
        excluded=excluded,
        evidence=str(row.get("evidence") or ""),
        reason=str(row.get("reason") or ""),
    )


def _terms(where: str, name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise ConfigError(f"{where}: {name} must be a list of non-empty strings")
    return tuple(" ".join(t.lower().split()) for t in value)
