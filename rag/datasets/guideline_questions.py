"""Guideline question sets in the NGC format: one JSON object a line, each question answered by one recommendation.

    {"_id": "gc-001", "text": "...", "doc_id": "ngc-10629", "evidence": "the recommendation, verbatim",
     "answer_terms": ["40 mg", "7 days"], "section": "its nearest heading"}

`answer_terms` are the strings (drug, dose, duration, threshold) any correct answer contains. A line that is not
such an object is reported with its file and line number; the set is refused rather than scored in part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.text.tokenize import content_word_share, plain_words

REQUIRED_FIELDS = ("_id", "text", "doc_id", "evidence", "answer_terms")
COVERAGE = 0.9  # share of a recommendation's distinct content words a passage must hold to contain it


@dataclass(frozen=True)
class GuidelineQuestion:
    question_id: str
    text: str
    doc_id: str  # the judged guideline
    evidence: str  # the recommendation that answers the question, as the guideline words it
    answer_terms: tuple[str, ...]
    section: str = ""


def read_guideline_questions(path: str | Path) -> list[GuidelineQuestion]:
    """Every question of the file, in file order; ConfigError naming the file, line and fix on a bad line."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the question set ({exc}); give a UTF-8 JSONL file") from exc
    questions: list[GuidelineQuestion] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        question = _question(file, number, line)
        if question.question_id in seen:
            raise ConfigError(f"{file}:{number}: duplicate _id {question.question_id!r}; each question needs its own")
        seen.add(question.question_id)
        questions.append(question)
    if not questions:
        raise ConfigError(
            f"{file}: no questions; expected one JSON object a line with fields {', '.join(REQUIRED_FIELDS)}"
        )
    return questions


def _question(file: Path, number: int, line: str) -> GuidelineQuestion:
    where = f"{file}:{number}"
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg}); each line must be one JSON object") from exc
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise ConfigError(
            f"{where}: missing field(s) {', '.join(missing)}; NGC questions need {', '.join(REQUIRED_FIELDS)}"
        )
    terms = row["answer_terms"]
    if not isinstance(terms, list) or not terms or not all(isinstance(t, str) and t.strip() for t in terms):
        raise ConfigError(f"{where}: answer_terms must be a non-empty list of non-empty strings")
    text = {name: row[name] for name in ("_id", "text", "doc_id", "evidence")}
    blank = [name for name, value in text.items() if not isinstance(value, str) or not value.strip()]
    if blank:
        raise ConfigError(f"{where}: {', '.join(blank)} must be non-empty strings")
    section = row.get("section") or ""
    return GuidelineQuestion(
        text["_id"], text["text"], text["doc_id"], text["evidence"], tuple(t.strip() for t in terms), str(section)
    )


def contains_evidence(passage: str, evidence: str) -> bool:
    """The recommendation is inside the passage: in order, or by COVERAGE of its distinct content words."""
    wanted, held = plain_words(evidence), plain_words(passage)
    if not wanted:
        return False
    if f" {' '.join(wanted)} " in f" {' '.join(held)} ":
        return True
    return content_word_share(passage, evidence) >= COVERAGE
