"""Training questions beyond MedQuAD: written for guideline recommendations, mined from judged sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer import build_index
from rag.core.config import IndexSettings
from rag.core.errors import ConfigError
from rag.retrieval.search import Searcher
from rag.testing import HashEmbedder
from rag.training.judged_sets import JudgedQuestion, mine_judged_groups, read_judged_questions
from rag.training.synthetic_questions import (
    Recommendation,
    clean_question,
    excluded_documents,
    names_topic,
    pick_recommendations,
    recommendations,
    write_questions,
)

EMBEDDER = HashEmbedder(dim=32, max_tokens=64)
STEROIDS = "Give prednisone 40 mg daily for 5 days for an acute COPD exacerbation. (**Strong For**)"
GUIDELINE = f"""---
id: "ngc-1"
title: "Management of chronic obstructive pulmonary disease"
---

# Management of chronic obstructive pulmonary disease

## Major Recommendations

***Note from the National Guideline Clearinghouse (NGC)***: The recommendations are organized into 4 modules.

### Acute exacerbation

1. {STEROIDS}
2. Offer noninvasive ventilation to patients with hypercapnic respiratory failure due to an exacerbation.
3. All staff should support patients to:

### Referral

Refer to a pulmonologist when the diagnosis is uncertain or the patient is younger than 40 years.

## Potential Harms

Oral steroids should be used with caution because they cause hyperglycaemia in a recommended dose.
"""


def test_recommendations_are_the_major_recommendations_items_with_their_heading() -> None:
    found = recommendations(GUIDELINE, "ngc-1")
    assert [(r.section, r.text[:20]) for r in found] == [
        ("Acute exacerbation", "Give prednisone 40 m"),
        ("Acute exacerbation", "Offer noninvasive ve"),
        ("Referral", "Refer to a pulmonolo"),
    ]  # the NGC note, a lead-in that needs its list, and other fields' text are not recommendations
    assert found[0].title == "Management of chronic obstructive pulmonary disease"
    assert "**" not in found[0].text and found[0].text.endswith("(Strong For)")
    assert recommendations("# A guideline without the field\n\nGive aspirin.", "x") == []


def test_excluded_guidelines_are_never_read(tmp_path: Path) -> None:
    folder = tmp_path / "ngc"
    folder.mkdir()
    (folder / "ngc-1.md").write_text(GUIDELINE)
    (folder / "ngc-2.md").write_text(GUIDELINE.replace('id: "ngc-1"', 'id: "ngc-2"'))
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"text": "q", "doc_id": "ngc-1"}) + "\n")
    picked = pick_recommendations(folder, exclude=excluded_documents([dev]), per_guideline=5, limit=10, seed=1)
    assert {r.doc_id for r in picked} == {"ngc-2"} and len(picked) == 3
    with pytest.raises(ConfigError, match="no Markdown guidelines"):
        pick_recommendations(tmp_path / "missing", exclude=set(), per_guideline=1, limit=1, seed=1)


def test_replies_become_questions_only_when_they_are_questions_about_the_topic() -> None:
    rec = Recommendation("ngc-1", "Management of COPD", "Acute exacerbation", STEROIDS)
    assert clean_question('Question: "My COPD flared up. What course of steroids?"\nExtra') == (
        "My COPD flared up. What course of steroids?"
    )
    assert clean_question("Prednisone 40 mg for five days.") is None
    assert clean_question("Why?") is None
    assert names_topic("How long should a COPD exacerbation be treated?", rec)
    assert not names_topic("What should I start for my patient?", rec)


def test_writing_appends_and_resumes_without_asking_twice(tmp_path: Path) -> None:
    recs = recommendations(GUIDELINE, "ngc-1")
    asked: list[str] = []

    def ask(system: str, user: str) -> str:
        asked.append(user)
        if "noninvasive" in user:
            raise RuntimeError("backend went away")
        return "A man with a COPD exacerbation: what should I give?"

    out = tmp_path / "questions.jsonl"
    first = write_questions(recs[:1], ask, out, seed=3, progress=False)
    second = write_questions(recs, ask, out, seed=3, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["written"] == 1 and second == {"written": 0, "rejected": 1, "already_done": 1, "failed": 1}
    assert len(asked) == 3  # the first recommendation was not asked again
    assert rows[0]["doc_id"] == "ngc-1" and rows[0]["evidence"] == recs[0].text
    assert [q.evidence for q in read_judged_questions(out)] == [recs[0].text]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("judged")
    folder = root / "guidelines"
    folder.mkdir()
    (folder / "ngc-1.md").write_text(GUIDELINE)
    (folder / "ngc-9.md").write_text(
        '---\nid: "ngc-9"\ntitle: "Asthma"\n---\n\n# Asthma\n\n## Major Recommendations\n\n'
        "Give inhaled budesonide for persistent asthma symptoms in adults.\n"
    )
    settings = IndexSettings.model_validate(
        {"cache_dir": str(root / "cache"), "chunker": {"max_tokens": 40, "overlap_tokens": 0}}
    )
    build_index([folder], root / "index", settings, embedder=EMBEDDER, progress=False)
    return root / "index"


def test_mining_takes_the_passage_holding_the_evidence_and_other_sections_as_negatives(index: Path) -> None:
    searcher = Searcher.load(index, EMBEDDER)
    question = JudgedQuestion("q1", "COPD exacerbation: which steroid dose and for how long?", frozenset({"ngc-1"}),
                              STEROIDS)  # fmt: skip
    groups, stats = mine_judged_groups(searcher, [question], negatives=3, heading_dropout=0.0, progress=False)
    passages = groups[0]
    assert "prednisone 40 mg" in passages.passages[0]
    assert all("prednisone 40 mg" not in p for p in passages.passages[1:])
    assert stats["queries"] == 1 and stats["same_document_negatives"] >= 1
    sentence = groups[1] if len(groups) > 1 else None
    assert sentence is None or "prednisone 40 mg" in sentence.passages[0]
    # An excluded guideline is shown neither as the positive nor as a negative.
    _, skipped = mine_judged_groups(searcher, [question], exclude={"ngc-1"}, progress=False)
    assert skipped["skipped_excluded"] == 1 and skipped["groups"] == 0
    groups, _ = mine_judged_groups(searcher, [question], exclude={"ngc-9"}, heading_dropout=0.0, progress=False)
    assert all("budesonide" not in p for p in groups[0].passages)
    # A written question whose passage is not retrieved is skipped, not trained on.
    lost = JudgedQuestion("q2", "COPD?", frozenset({"ngc-1"}), "words that appear in no passage at all here")
    assert mine_judged_groups(searcher, [lost], progress=False)[1]["skipped_positive_not_retrieved"] == 1


def test_bad_question_files_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "q", "doc_id": "d"}\n{"text": ""}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl: question 2 needs"):
        read_judged_questions(bad)
    with pytest.raises(ConfigError, match="not a BEIR folder"):
        read_judged_questions(tmp_path)


def test_bad_training_sets_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli.main import main

    base = ["train", "reranker", "--out", str(tmp_path / "out"), "--index", str(tmp_path), "--quiet"]
    assert main([*base, "--also", str(tmp_path / "missing.jsonl"), str(tmp_path)]) == 2
    assert "no such question set" in capsys.readouterr().err
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"text": "q", "doc_id": "d"}) + "\n")
    assert main([*base, "--also", str(questions), str(tmp_path / "no-index")]) == 2
    assert "not an index" in capsys.readouterr().err
    assert main(["train", "questions", "--out", str(tmp_path / "x.jsonl"), "--guidelines", str(tmp_path / "no")]) == 2
    assert main(["search", "q", "--index", str(tmp_path), "--rerank-prior-scale", "-1"]) == 2
    assert "rerank_prior_scale" in capsys.readouterr().err
