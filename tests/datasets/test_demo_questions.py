"""The judged demo question set: one question per `bench_ask.py` question, each answered by a demo guideline."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from indexer.load import load_source
from rag.core.types import SourceDocument
from rag.datasets.guideline_questions import GuidelineQuestion, contains_evidence, read_guideline_questions

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS_FILE = ROOT / "corpora" / "examples" / "demo_questions.jsonl"
GUIDELINES = ROOT / "corpora" / "guidelines"


def bench_questions() -> list[str]:
    """`QUESTIONS` of benchmarks/bench_ask.py, read without importing the benchmark."""
    tree = ast.parse((ROOT / "benchmarks" / "bench_ask.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "QUESTIONS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("benchmarks/bench_ask.py has no QUESTIONS list")


def demo_guidelines() -> dict[str, SourceDocument]:
    """Every demo guideline by the doc_id the indexer's Markdown loader gives it."""
    documents: dict[str, SourceDocument] = {}
    for path in sorted(GUIDELINES.glob("*.md")):
        result = load_source(path)
        assert not result.failures, result.failures
        for document in result.documents:
            documents[document.doc_id] = document
    return documents


QUESTIONS = read_guideline_questions(QUESTIONS_FILE)
DOCUMENTS = demo_guidelines()


def test_one_question_per_bench_question_in_order() -> None:
    assert len(QUESTIONS) == 20
    assert [q.text for q in QUESTIONS] == bench_questions()
    assert [q.question_id for q in QUESTIONS] == [f"demo-{i:02d}" for i in range(1, 21)]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.question_id)
def test_evidence_and_terms_come_from_the_judged_guideline(question: GuidelineQuestion) -> None:
    assert question.doc_id in DOCUMENTS, f"{question.doc_id!r} is not a demo guideline id"
    document = DOCUMENTS[question.doc_id]
    assert contains_evidence(document.text, question.evidence)
    assert question.evidence in document.text  # copied verbatim, not only by word coverage
    assert 1 <= len(question.answer_terms) <= 3
    for term in question.answer_terms:
        assert term.lower() in question.evidence.lower(), f"answer term {term!r} is not in the evidence"
    assert question.section
