"""Reading guideline question sets (NGC format): every bad line is refused with its file, line and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.core.errors import ConfigError
from rag.datasets.guideline_questions import read_guideline_questions

GOOD = {
    "_id": "q1",
    "text": "What dose of prednisone for a COPD flare?",
    "doc_id": "ngc-1",
    "evidence": "Prednisone 40 mg daily for 5 days.",
    "answer_terms": ["40 mg", "5 days"],
    "section": "Acute",
}


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reads_every_question_in_file_order(tmp_path: Path) -> None:
    questions = read_guideline_questions(write(tmp_path / "q.jsonl", [GOOD, "", {**GOOD, "_id": "q2"}]))
    assert [q.question_id for q in questions] == ["q1", "q2"]
    assert questions[0].answer_terms == ("40 mg", "5 days") and questions[0].doc_id == "ngc-1"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", r"q.jsonl:1: not JSON"),
        ([1, 2], r"q.jsonl:1: expected a JSON object"),
        ({k: v for k, v in GOOD.items() if k != "doc_id"}, r"q.jsonl:1: missing field\(s\) doc_id"),
        ({**GOOD, "answer_terms": []}, r"answer_terms must be a non-empty list"),
        ({**GOOD, "answer_terms": "40 mg"}, r"answer_terms must be a non-empty list"),
        ({**GOOD, "text": "  "}, r"text must be non-empty strings"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, row: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_guideline_questions(write(tmp_path / "q.jsonl", [row]))


def test_duplicate_ids_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"q.jsonl:2: duplicate _id 'q1'"):
        read_guideline_questions(write(tmp_path / "q.jsonl", [GOOD, GOOD]))
    with pytest.raises(ConfigError, match="no questions"):
        read_guideline_questions(write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(ConfigError, match="cannot read the question set"):
        read_guideline_questions(tmp_path / "absent.jsonl")


def test_the_shared_ngc_dev_set_reads(shared_data: Path) -> None:
    questions = read_guideline_questions(shared_data / "guidelines" / "ngc_questions_dev.jsonl")
    assert len(questions) == 88 and all(q.doc_id.startswith("ngc-") for q in questions)
    assert len({q.doc_id for q in questions}) == 88
