"""`clinrag eval answers --questions`: recall of the judged guideline and recommendation, hit, answer terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer import build_index
from rag.answering.engine import Engine
from rag.core.config import IndexSettings, Settings
from rag.datasets.guideline_questions import GuidelineQuestion, contains_evidence
from rag.evaluation.guideline_answers import (
    evaluate_guideline_answers,
    summarize_guideline_answers,
    terms_found,
)
from rag.testing import HashEmbedder, LexicalReranker, ScriptedGenerator

EMBEDDER = HashEmbedder(dim=32, max_tokens=64)
GUIDELINES = {
    "copd": "# COPD exacerbations\n\n## Acute management\n\nFor acute exacerbations give prednisone 40 mg daily for "
    "5 days. Antibiotics are given when sputum is purulent.\n",
    "uti": "# Cystitis\n\n## Treatment\n\nNitrofurantoin 100 mg twice daily for 5 days is first-line for "
    "uncomplicated cystitis in women.\n",
}


def test_evidence_is_inside_a_passage_in_order_or_by_coverage() -> None:
    passage = "Recommendations: For acute exacerbations give **prednisone 40 mg** daily for 5 days. Other text."
    assert contains_evidence(passage, "give prednisone 40 mg daily for 5 days")
    assert contains_evidence(passage, "prednisone 40 mg for 5 days daily, exacerbations acute")  # re-worded order
    assert not contains_evidence(passage, "give amoxicillin 500 mg three times daily for 7 days")
    assert not contains_evidence(passage, "")


def test_terms_are_found_case_insensitively_with_spacing_folded() -> None:
    assert terms_found(["40 MG", "5  days", "ICS"], "Prednisone 40 mg daily for 5 days") == [True, True, False]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("guidelines")
    for name, text in GUIDELINES.items():
        (folder / f"{name}.md").write_text(f"---\nid: {name}\ntitle: {name}\ntype: guideline\n---\n\n{text}")
    out = folder.parent / "index"
    build_index([folder], out, IndexSettings(), embedder=EMBEDDER)
    return out


def engine_replying(index: Path, reply: str) -> Engine:
    settings = Settings.model_validate({"answer": {"min_evidence_score": -1.0, "support_checker": "calibrated"}})
    return Engine.load(index, settings=settings, generator=ScriptedGenerator(lambda _: reply),
                       embedder=EMBEDDER, reranker=LexicalReranker())  # fmt: skip


QUESTION = GuidelineQuestion(
    "q1",
    "What dose of prednisone for acute COPD exacerbations?",
    "copd",
    "For acute exacerbations give prednisone 40 mg daily for 5 days.",
    ("40 mg", "5 days"),
)


def test_scores_an_answer_that_quotes_the_recommendation(index: Path) -> None:
    engine = engine_replying(index, "1. For acute exacerbations give prednisone 40 mg daily for 5 days. [E1]")
    search = lambda q, rerank: engine.searcher.search(q, k=10, rerank=rerank)  # noqa: E731
    (record,) = evaluate_guideline_answers([QUESTION], search, engine.ask)
    assert record.doc_recall and record.doc_recall_reranked
    assert record.evidence_recall and record.evidence_recall_reranked
    assert record.error is None
    report = summarize_guideline_answers([record])
    assert report.questions == 1 and report.doc_recall_at_10 == 1.0 and report.evidence_recall_at_10 == 1.0
    assert record.hit and record.cited_judged == record.cited == 1
    assert record.term_recall == 1.0 and record.all_terms and report.hit_rate == report.cited_precision == 1.0


def test_an_answer_citing_another_guideline_misses(index: Path) -> None:
    engine = engine_replying(index, "1. Nitrofurantoin 100 mg twice daily for 5 days is first-line. [E1]")
    question = GuidelineQuestion("q2", "First-line treatment of uncomplicated cystitis in women?", "copd",
                                 "prednisone 40 mg", ("40 mg",))  # fmt: skip
    search = lambda q, rerank: engine.searcher.search(q, k=10, rerank=rerank)  # noqa: E731
    (record,) = evaluate_guideline_answers([question], search, engine.ask)
    assert not record.hit and record.term_recall == 0.0 and not record.all_terms


def test_a_question_whose_answer_fails_is_recorded_and_the_run_goes_on(index: Path) -> None:
    engine = engine_replying(index, "1. Nitrofurantoin 100 mg twice daily for 5 days. [E1]")

    def failing(question: str) -> object:
        raise RuntimeError("generator crashed")

    search = lambda q, rerank: engine.searcher.search(q, k=10, rerank=rerank)  # noqa: E731
    records = evaluate_guideline_answers([QUESTION, QUESTION], search, failing)  # type: ignore[arg-type]
    assert [r.error for r in records] == ["generator crashed", "generator crashed"]
    report = summarize_guideline_answers(records)
    assert report.errors == 2 and report.hit_rate == 0.0 and report.abstention_rate == 1.0


@pytest.mark.slow
def test_the_command_scores_a_question_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli.main import main

    folder = tmp_path / "guidelines"
    folder.mkdir()
    for name, text in GUIDELINES.items():
        (folder / f"{name}.md").write_text(f"---\nid: {name}\ntitle: {name}\ntype: guideline\n---\n\n{text}")
    build_index([folder], tmp_path / "index", IndexSettings(cache_dir=str(tmp_path / "cache")))  # the real embedder
    questions = tmp_path / "q.jsonl"
    row = {"_id": "q1", "text": QUESTION.text, "doc_id": "copd", "evidence": QUESTION.evidence,
           "answer_terms": list(QUESTION.answer_terms)}  # fmt: skip
    questions.write_text(json.dumps(row) + "\n", encoding="utf-8")
    argv = ["eval", "answers", "--questions", str(questions), "--index", str(tmp_path / "index"), "--no-rerank",
            "--records", str(tmp_path / "records.jsonl"), "--json"]  # fmt: skip
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["questions"] == 1 and shown["generator"] == "extractive"
    assert shown["doc_recall_at_10"] == 1.0 and shown["evidence_recall_at_10"] == 1.0
    assert shown["hit_rate"] == 1.0 and shown["answer_term_recall"] == 1.0
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert record["question_id"] == "q1" and record["error"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "answers"], "give --corpus BEIR_DIR"),
        (["eval", "answers", "--questions", "q.jsonl"], "--questions needs the index"),
        (["eval", "answers", "--questions", "q.jsonl", "--index", "x", "--qtype", "treatment"], "--qtype selects"),
        (["eval", "answers", "--corpus", "x", "--offset", "-1"], "--offset must be at least 0"),
    ],
)
def test_bad_combinations_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli.main import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
