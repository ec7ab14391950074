"""Issue 34's bad input: guidelines without headings, a 2 MB recommendation list, a 500-row table, questions of
one word and of 5,000 words, a patient whose conditions match nothing: each gives a defined answer or an
abstention, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer import build_index
from rag.answering.engine import Engine
from rag.answering.patient import Patient
from rag.core.config import IndexSettings, Settings
from rag.core.errors import ConfigError
from rag.testing import HashEmbedder, LexicalReranker

EMBEDDER = HashEmbedder(dim=32, max_tokens=64)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad_guidelines")
    (folder / "no-headings.md").write_text(
        "Nitrofurantoin 100 mg twice daily for 5 days is first-line for uncomplicated cystitis in women. "
        "Fosfomycin 3 g once is an alternative.\n"
    )
    items = "".join(
        f"{i}. Give drug{i} {i} mg daily for condition{i % 97} (Class I, Level A).\n" for i in range(40_000)
    )
    (folder / "long-list.md").write_text(f"# Long list\n\n## Major Recommendations\n\n{items}")
    assert (folder / "long-list.md").stat().st_size > 2_000_000
    rows = "".join(f"| drug{i} | {i} mg | condition{i} |\n" for i in range(500))
    (folder / "table.md").write_text(f"# Table\n\n## Doses\n\n| Drug | Dose | Condition |\n| --- | --- | --- |\n{rows}")
    settings = IndexSettings.model_validate({"cache_dir": str(folder.parent / "cache")})
    report = build_index([folder], folder.parent / "index", settings, embedder=EMBEDDER, progress=False)
    assert not report.failures and report.documents == 3
    return folder.parent / "index"


@pytest.fixture(scope="module")
def engine(index: Path) -> Engine:
    settings = Settings.model_validate({"answer": {"min_evidence_score": -1.0, "support_checker": "calibrated"},
                                        "generator": {"kind": "extractive"}})  # fmt: skip
    return Engine.load(index, settings=settings, embedder=EMBEDDER, reranker=LexicalReranker())


@pytest.mark.parametrize(
    "question",
    ["cystitis", "What is the dose of drug123 for condition26? " * 500, "drug499 dose"],
    ids=["one-word", "5000-words", "table-row"],
)
def test_every_question_gets_an_answer_or_an_abstention(engine: Engine, question: str) -> None:
    answer = engine.ask(question)
    assert answer.abstained or answer.suggestions
    assert all(s.citations for s in answer.suggestions)
    assert answer.abstained == (answer.abstention_reason is not None)


def test_a_question_without_words_is_refused_with_the_fix(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="ask a question in words"):
        engine.ask("?!")


def test_a_pasted_document_is_declined_with_the_fix(engine: Engine) -> None:
    answer = engine.ask("What is the dose of drug123 for condition26? " * 500)
    assert answer.abstained and "at most 300 words" in str(answer.abstention_reason)


def test_a_patient_whose_conditions_match_nothing_changes_nothing(engine: Engine) -> None:
    question = "first-line treatment for uncomplicated cystitis"
    plain = engine.ask(question)
    odd = engine.ask(question, patient=Patient(conditions=("zzzz unknown syndrome", "qwxy")))
    assert [s.text for s in odd.suggestions] == [s.text for s in plain.suggestions]
    assert not any(f.kind == "contraindication" for s in odd.suggestions for f in s.flags)
