"""The QA evaluation harness with a scripted generator: metrics by hand, resume, failures, leakage, bad input."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.answering.citations import ParsedSuggestion
from rag.checking.support import LexicalSupportChecker
from rag.cli.main import main as clinrag_main
from rag.core.config import IndexSettings, Settings
from rag.core.errors import ConfigError
from rag.datasets.qa import read_dataset
from rag.evaluation.qa.grid import Grid, expand, grid_from_mapping, load_grid
from rag.evaluation.qa.runner import RunResult, run_grid
from rag.evaluation.qa.scoring import (
    accuracy_interval,
    citation_counts,
    confusion_matrix,
    kqa_counts,
    macro_f1_interval,
    mean_interval,
    parse_choice,
    retrieval_scores,
)
from rag.evaluation.qa.selectors import ExampleSelector, build_pool
from rag.models.generators.base import ChatMessage, GenerationError
from rag.testing import HashEmbedder, ScriptedGenerator

EMBEDDER = HashEmbedder(dim=32, max_tokens=96)
# question, context, gold, what the fake model's label scores pick (from the context's verb)
PUBMEDQA = [
    ("Does drug A improve sleep?", "Drug A improves sleep in adults.", "yes"),
    ("Does exercise improve mood?", "Exercise improves mood in older adults.", "yes"),
    ("Does smoking help lungs?", "Smoking worsens lung function.", "no"),
    ("Does sugar help teeth?", "Sugar improves nothing but was studied.", "no"),
    ("Is coffee linked to arrhythmia?", "Results on coffee were unclear.", "maybe"),
    ("Does yoga reduce back pain?", "Yoga results were unclear in trials.", "yes"),
]


def write_pubmedqa(path: Path, rows: Sequence[tuple[str, str, str]] = PUBMEDQA) -> Path:
    data = {
        str(n): {
            "QUESTION": q,
            "CONTEXTS": ["Background of the study.", context],
            "LABELS": ["BACKGROUND", "RESULTS"],
            "YEAR": "2001",
            "final_decision": gold,
            "LONG_ANSWER": context,
        }
        for n, (q, context, gold) in enumerate(rows, 1)
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def pick_by_verb(messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
    """The fake model reads only the question's own turn: improves -> yes, worsens -> no, else maybe."""
    text = messages[-1].content
    pick = "yes" if "improves" in text else "no" if "worsens" in text else "maybe"
    return [0.0 if label.endswith(pick) else -5.0 for label in labels]


class CountingGenerator(ScriptedGenerator):
    def __init__(self, replies: Any = (), **kwargs: Any) -> None:
        super().__init__(replies, **kwargs)
        self.scored: list[tuple[ChatMessage, ...]] = []

    def score_labels(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        self.scored.append(tuple(messages))
        return super().score_labels(messages, labels)


def fake(**kwargs: Any) -> CountingGenerator:
    return CountingGenerator(label_scores=kwargs.pop("label_scores", pick_by_verb), **kwargs)


def run(tmp: Path, data: Path, fmt: str = "pubmedqa", grid: Grid | None = None, **kwargs: Any) -> RunResult:
    generators = kwargs.pop("generators", None) or {"default": fake()}
    return run_grid(
        data,
        fmt,
        kwargs.pop("out", tmp / "run"),
        grid=grid,
        generators=generators,
        embedder=EMBEDDER,
        checker=kwargs.pop("checker", None) or LexicalSupportChecker(),
        progress=False,
        plots=kwargs.pop("plots", False),
        **kwargs,
    )


def predictions(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


class WordChecker(LexicalSupportChecker):
    """Supported when every word of the claim is in the passage: easy to reason about by hand."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> Any:
        def words(text: str) -> set[str]:
            return set(re.findall(r"[a-z]+", text.lower()))

        return np.array([1.0 if words(c) <= words(e) else 0.0 for c, e in pairs])

    def supported(self, score: float) -> bool:
        return score >= 0.5


# ---------------------------------------------------------------------------------------------------- metrics


def test_accuracy_macro_f1_and_confusion_by_hand() -> None:
    predicted = ["yes", "yes", "no", "yes", "maybe", "maybe"]
    gold = ["yes", "yes", "no", "no", "maybe", "yes"]
    acc = accuracy_interval(predicted, gold, resamples=500, confidence=0.95, seed=1)
    assert acc.value == pytest.approx(4 / 6)
    assert acc.low <= acc.value <= acc.high
    # yes: tp 2, fp 1, fn 1 -> 2/3; no: tp 1, fn 1 -> 2/3; maybe: tp 1, fp 1 -> 2/3
    f1 = macro_f1_interval(predicted, gold, ["yes", "no", "maybe"], resamples=500, confidence=0.95, seed=1)
    assert f1.value == pytest.approx(2 / 3)
    matrix = confusion_matrix([*predicted[:5], None], gold, ["yes", "no", "maybe"])
    assert matrix["yes"] == {"yes": 2, "no": 0, "maybe": 0, "(none)": 1}
    assert matrix["no"] == {"yes": 1, "no": 1, "maybe": 0, "(none)": 0}


def test_bootstrap_is_seeded() -> None:
    predicted = ["a", "b"] * 20
    gold = ["a"] * 40
    first = accuracy_interval(predicted, gold, resamples=300, confidence=0.95, seed=7)
    assert first == accuracy_interval(predicted, gold, resamples=300, confidence=0.95, seed=7)
    values = list(np.linspace(0.0, 1.0, 37) ** 2)  # continuous: two seeds cannot land on the same bounds
    assert mean_interval(values, resamples=300, confidence=0.95, seed=7) == mean_interval(
        values, resamples=300, confidence=0.95, seed=7
    )
    assert mean_interval(values, resamples=300, confidence=0.95, seed=7) != mean_interval(
        values, resamples=300, confidence=0.95, seed=8
    )
    assert first.low < 0.5 < first.high
    perfect = accuracy_interval(gold, gold, resamples=300, confidence=0.95, seed=7)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)


def test_alce_citation_precision_and_recall_by_hand() -> None:
    passages = {"E1": "aspirin reduces pain and fever", "E2": "in children", "E3": "unrelated text"}
    statements = [
        ParsedSuggestion("aspirin reduces pain", ("E1",)),  # recalled, 1 precise citation
        ParsedSuggestion("aspirin reduces fever in children", ("E1", "E2")),  # needs both: 2 precise
        ParsedSuggestion("aspirin reduces pain", ("E1", "E3")),  # E3 is redundant: 1 of 2 precise
        ParsedSuggestion("ibuprofen cures cancer", ("E9",)),  # a key naming nothing
        ParsedSuggestion("no citation at all", ()),
    ]
    counts = citation_counts(statements, passages, WordChecker())
    assert (counts.statements, counts.supported, counts.citations, counts.relevant) == (5, 3, 6, 4)


def test_kqa_comprehensiveness_and_contradiction() -> None:
    answer = "Hydrocortisone cream treats itching. Do not use it for more than two weeks."
    counts = kqa_counts(
        answer,
        ["Hydrocortisone cream treats itching", "See a doctor before using it"],
        ["Use hydrocortisone for longer than two weeks"],
        WordChecker(),
    )
    assert (counts.must_have, counts.supported, counts.statements, counts.contradicted) == (2, 1, 3, 1)


def test_retrieval_scores_and_choice_parsing() -> None:
    assert retrieval_scores(["d2", "d1"], ["d1"], 3) == pytest.approx(
        {"recall": 1.0, "mrr": 0.5, "ndcg": 1 / np.log2(3)}
    )
    assert retrieval_scores(["d2"], ["d1"], 3)["recall"] == 0.0
    labels = ("A", "B", "C", "D")
    assert parse_choice("ANSWER: C", labels) == "C"
    assert parse_choice("(b) because...", labels) == "B"
    assert parse_choice("D. Aspirin", labels) == "D"
    assert parse_choice("ANSWER: E", labels) is None
    assert parse_choice("I am not sure", labels) is None
    assert parse_choice("A drug is needed", labels) is None
    assert parse_choice("B", labels) == "B"


# ---------------------------------------------------------------------------------------------------- input


def test_malformed_rows_are_recorded_not_fatal(tmp_path: Path) -> None:
    data = json.loads(write_pubmedqa(tmp_path / "p.json").read_text())
    data["7"] = {"CONTEXTS": ["x"], "final_decision": "yes"}  # no QUESTION
    data["8"] = {"QUESTION": "Q?", "CONTEXTS": ["x"], "final_decision": "perhaps"}
    data["9"] = "not an object"
    (tmp_path / "p.json").write_text(json.dumps(data))
    readout = read_dataset(tmp_path / "p.json", "pubmedqa")
    assert len(readout.items) == 6
    reasons = {f.row: f.reason for f in readout.failures}
    assert "QUESTION" in reasons["7"] and "perhaps" in reasons["8"] and "not an object" in reasons["9"]

    (tmp_path / "k.jsonl").write_text(
        '{"Question": "Can I swim?", "Must_have": ["Yes you can swim."], "Nice_to_have": []}\n'
        "{not json\n"
        '{"Question": "Unanswered?", "Must_have": []}\n'
    )
    kqa = read_dataset(tmp_path / "k.jsonl", "kqa")
    assert len(kqa.items) == 1 and [f.row for f in kqa.failures] == ["line 2", "line 3"]

    mirage = {"mmlu": {"q1": {"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "C"}}}
    (tmp_path / "m.json").write_text(json.dumps(mirage))
    with pytest.raises(ConfigError, match=r"m\.json: no usable mirage rows .*answer 'C'"):
        read_dataset(tmp_path / "m.json", "mirage")


def test_unknown_format_and_missing_files(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")
    with pytest.raises(ConfigError, match="unknown format 'medqa'; use one of pubmedqa, mirage, kqa"):
        read_dataset(data, "medqa")
    with pytest.raises(ConfigError, match="no such dataset file"):
        read_dataset(tmp_path / "missing.json", "pubmedqa")
    with pytest.raises(ConfigError, match="expected an object keyed by PMID"):
        (tmp_path / "list.json").write_text("[1, 2]")
        read_dataset(tmp_path / "list.json", "pubmedqa")
    grid = grid_from_mapping({"shots": [1], "pool": {"path": str(tmp_path / "nope.json")}})
    with pytest.raises(ConfigError, match=r"nope\.json: the example pool file does not exist"):
        run(tmp_path, data, grid=grid)
    with pytest.raises(ConfigError, match="names no pool"):
        run(tmp_path, data, grid=grid_from_mapping({"shots": [2], "selectors": ["semantic"]}))
    with pytest.raises(ConfigError, match="no index was given"):
        run(tmp_path, data, grid=grid_from_mapping({"settings": ["retrieved"], "retrieval": [{"mode": "bm25"}]}))


def test_grid_yaml_rejects_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text("shots: [0, 3]\nshot: [1]\n")
    with pytest.raises(ConfigError, match=r"g\.yaml: invalid grid: shot: Extra inputs are not permitted"):
        load_grid(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text("retrieval:\n  - {mode: hybrid, kk: 3}\n")
    with pytest.raises(ConfigError, match=r"retrieval\.0\.kk"):
        load_grid(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text("generators:\n  - {name: x, tempreature: 0}\n")
    with pytest.raises(ConfigError, match=r"generators\.0\.tempreature"):
        load_grid(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text("selectors: [nearest]\n")
    with pytest.raises(ConfigError, match=r"selectors\.0"):
        load_grid(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping of axes"):
        load_grid(tmp_path / "g.yaml")


def test_grid_expansion_ids_and_skips() -> None:
    grid = grid_from_mapping(
        {
            "shots": [0, 1, 3],
            "selectors": ["random", "semantic"],
            "pool": {"path": "pool.json"},
            "settings": ["gold", "retrieved"],
            "retrieval": [{"mode": "none"}, {"mode": "hybrid", "k": 3}],
        }
    )
    configs, skipped = expand(grid, "pubmedqa", Settings(), {"pool": "p1", "index": "i1"})
    # 0 shots collapse the selectors: (1 + 2 + 2) shot cells x (gold, hybrid) contexts
    assert len(configs) == 10 and len({c.config_id for c in configs}) == 10
    assert any("gold context is shown on its own" in s.reason for s in skipped)
    assert any("closed-book" in s.reason for s in skipped)
    with_closed_book, _ = expand(grid.model_copy(update={"closed_book": True}), "pubmedqa", Settings(), {})
    assert len(with_closed_book) == 15
    again, _ = expand(grid, "pubmedqa", Settings(), {"pool": "p1", "index": "i1"})
    assert [c.config_id for c in again] == [c.config_id for c in configs]
    changed, _ = expand(grid, "pubmedqa", Settings(), {"pool": "p2", "index": "i1"})
    assert {c.config_id for c in changed if c.shots} & {c.config_id for c in configs} == set()
    faster = grid.model_copy(update={"generators": [grid.generators[0].model_copy(update={"threads": 2})]})
    assert [c.config_id for c in expand(faster, "pubmedqa", Settings(), {"pool": "p1", "index": "i1"})[0]] == [
        c.config_id for c in configs
    ]  # threads change speed, not answers: finished items still count
    mirage, skipped = expand(grid, "mirage", Settings(), {})
    assert all(c.setting == "retrieved" for c in mirage) and any("no gold context" in s.reason for s in skipped)


# ---------------------------------------------------------------------------------------------------- selectors


def test_no_example_leakage(tmp_path: Path) -> None:
    rows = [*PUBMEDQA, ("DOES DRUG A IMPROVE SLEEP", "A copy of item 1 under another id.", "yes")]
    readout = read_dataset(write_pubmedqa(tmp_path / "p.json", rows), "pubmedqa")
    items = readout.items[:6]
    assert [p.item_id for p in build_pool(readout, items[:3]).items] == ["4", "5", "6"]  # 7 repeats item 1
    with pytest.raises(ConfigError, match="pool is empty"):
        build_pool(readout, items)
    pool = build_pool(readout, items, exclude="item")
    for method in ("random", "semantic", "mmr"):
        selector = ExampleSelector(pool, seed=3, embedder=EMBEDDER)
        for item in items:
            chosen = selector.select(item, 6, method)
            assert item.item_id not in {c.item_id for c in chosen}
            assert item.item_id != "1" or "7" not in {c.item_id for c in chosen}  # same question, other id
            assert len(chosen) == (5 if item.item_id == "1" else 6)


def test_selectors_are_deterministic_and_semantic_picks_nearest(tmp_path: Path) -> None:
    readout = read_dataset(write_pubmedqa(tmp_path / "p.json"), "pubmedqa")
    pool = build_pool(readout, readout.items, exclude="item")
    item = readout.items[0]
    random_three = ExampleSelector(pool, seed=5).select(item, 3, "random")
    assert ExampleSelector(pool, seed=5).select(item, 3, "random") == random_three
    assert ExampleSelector(pool, seed=5).select(item, 1, "random") == random_three[:1]
    semantic = ExampleSelector(pool, seed=5, embedder=EMBEDDER).select(item, 2, "semantic")
    sims = {p.item_id: float(EMBEDDER.embed([p.question, item.question]).prod(axis=0).sum()) for p in pool.items}
    nearest = max((p for p in pool.items if p.item_id != item.item_id), key=lambda p: sims[p.item_id])
    assert semantic[-1].item_id == nearest.item_id  # the closest example sits next to the question


# ---------------------------------------------------------------------------------------------------- runs


def test_run_scores_by_hand_and_writes_outputs(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")
    result = run(tmp_path, data, plots=True)
    (summary,) = result.summaries
    assert summary.accuracy is not None and summary.macro_f1 is not None
    assert summary.accuracy.value == pytest.approx(4 / 6)
    assert summary.macro_f1.value == pytest.approx(2 / 3)
    assert summary.confusion["yes"] == {"yes": 2, "no": 0, "maybe": 1, "(none)": 0}
    rows = predictions(result.out)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    first = rows[0]
    assert first["parsed"] == "yes" and first["correct"] is True and len(first["prompt_sha256"]) == 64
    assert set(first["label_scores"]) == {"yes", "no", "maybe"}
    config = json.loads((result.out / "config.json").read_text())
    assert config["dataset"]["sha256"] and config["versions"]["numpy"] and config["seeds"]["grid"] == 13
    assert len(config["configurations"]) == 1 and config["configurations"][0]["setting"] == "gold"
    csv_lines = (result.out / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 2 and csv_lines[1].startswith("1,")
    markdown = (result.out / "summary.md").read_text()
    assert "| **★** |" in markdown and "0.667 [" in markdown
    assert (result.out / "accuracy_vs_shots.png").stat().st_size > 1000
    assert (result.out / "dataset_comparison.png").stat().st_size > 1000


def test_resume_skips_finished_items_and_survives_a_torn_line(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")
    run(tmp_path, data)
    generator = fake()
    again = run(tmp_path, data, generators={"default": generator})
    assert (again.evaluated, again.resumed, len(generator.scored)) == (0, 6, 0)
    file = tmp_path / "run" / "predictions.jsonl"
    file.write_bytes(file.read_bytes()[:-25])  # a crash in the middle of writing the last item
    generator = fake()
    resumed = run(tmp_path, data, generators={"default": generator})
    assert (resumed.evaluated, len(generator.scored)) == (1, 1)
    assert resumed.summaries[0].accuracy is not None and resumed.summaries[0].accuracy.value == pytest.approx(4 / 6)
    assert len(predictions(tmp_path / "run")) == 6
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [r["evaluated"] for r in config["runs"]] == [6, 0, 1]
    other = write_pubmedqa(tmp_path / "q.json", PUBMEDQA[:3])
    with pytest.raises(ConfigError, match="holds a run on another dataset"):
        run(tmp_path, other)


def test_failed_items_are_recorded_and_retried(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")

    def flaky(messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        if "Smoking" in messages[-1].content:
            raise GenerationError("endpoint timed out after 120 s")
        return pick_by_verb(messages, labels)

    result = run(tmp_path, data, generators={"default": fake(label_scores=flaky)})
    assert result.failed == 1 and result.summaries[0].scored == 5
    failed = [r for r in predictions(result.out) if r["status"] == "failed"]
    assert failed[0]["item_id"] == "3" and "timed out" in failed[0]["error"]
    assert re.search(r"\| \**5/6\** \| \**1\** \|", (result.out / "summary.md").read_text())
    generator = fake()
    retried = run(tmp_path, data, generators={"default": generator})
    assert (retried.evaluated, retried.failed, len(generator.scored)) == (1, 0, 1)


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json", PUBMEDQA * 1)
    grid = grid_from_mapping(
        {"shots": [0, 2], "selectors": ["random", "mmr"], "pool": {"path": str(data), "exclude": "item"}}
    )

    def numbers(out: Path) -> list[Any]:
        rows = json.loads((out / "metrics.json").read_text())
        return [{k: v for k, v in r.items() if k not in ("latency_s",)} for r in rows]

    first = run(tmp_path, data, grid=grid, out=tmp_path / "a")
    second = run(tmp_path, data, grid=grid, out=tmp_path / "b")
    assert numbers(first.out) == numbers(second.out)
    shots = [(r["config_id"], r["item_id"], r["shot_ids"]) for r in predictions(first.out)]
    assert shots == [(r["config_id"], r["item_id"], r["shot_ids"]) for r in predictions(second.out)]


def test_few_shot_turns_come_from_the_pool_never_the_item(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")
    grid = grid_from_mapping({"shots": [2], "selectors": ["semantic"], "pool": {"path": str(data), "exclude": "item"}})
    generator = fake()
    result = run(tmp_path, data, grid=grid, generators={"default": generator})
    for messages, row in zip(generator.scored, predictions(result.out), strict=True):
        assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert row["item_id"] not in row["shot_ids"] and len(row["shot_ids"]) == 2
        assert messages[2].content.startswith("ANSWER: ")
        own_question = messages[-1].content.split("Question:")[-1]
        assert all(own_question not in m.content for m in messages[1:-1])


def test_generate_scoring_parses_answers_and_scores_citations(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")

    def reply(messages: Sequence[ChatMessage]) -> str:
        text = messages[-1].content
        key = re.findall(r'<evidence key="(E\d+)"[^>]*>\n(?:Results)', text)[0]
        sentence = text.split("Results: ")[1].split("\n")[0]
        if "unclear" in text:
            return "I cannot tell."
        return f"ANSWER: yes\nCONCLUSION: {sentence} [{key}]"

    grid = grid_from_mapping({"scoring": ["generate"]})
    result = run(tmp_path, data, grid=grid, generators={"default": fake(replies=reply)}, checker=WordChecker())
    (summary,) = result.summaries
    assert summary.unparsed == 2 and summary.accuracy is not None
    assert summary.accuracy.value == pytest.approx(2 / 6)  # yes on items 1, 2; wrong on 3, 4; unparsed 5, 6
    assert summary.citation_recall == 1.0 and summary.citation_precision == 1.0


def write_index(root: Path, docs: dict[str, str]) -> Path:
    from indexer import build_index

    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    settings = IndexSettings.model_validate({"cache_dir": str(root / "cache")})
    build_index([corpus], root / "index", settings, embedder=EMBEDDER)
    return root / "index"


def test_retrieved_setting_scores_retrieval_against_pmids(tmp_path: Path) -> None:
    data = write_pubmedqa(tmp_path / "p.json")
    index = write_index(tmp_path, {f"pmid:{n}": f"{q} {c}" for n, (q, c, _) in enumerate(PUBMEDQA, 1)})
    grid = grid_from_mapping({"settings": ["retrieved"], "retrieval": [{"mode": "bm25", "k": 2}]})
    result = run(tmp_path, data, grid=grid, index=index)
    (summary,) = result.summaries
    assert summary.retrieval["recall@2"] == 1.0 and summary.retrieval["mrr@2"] == 1.0
    assert predictions(result.out)[0]["retrieved_docs"][0] == "pmid:1"


def test_mirage_subsets_and_kqa_generation(tmp_path: Path) -> None:
    mirage = {
        "mmlu": {f"m{n}": {"question": f"Q{n}?", "options": {"A": "x", "B": "y"}, "answer": "A"} for n in range(4)},
        "medmcqa": {f"c{n}": {"question": f"C{n}?", "options": {"A": "x", "B": "y"}, "answer": "B"} for n in range(4)},
    }
    (tmp_path / "m.json").write_text(json.dumps(mirage))
    index = write_index(tmp_path, {"d1": "Hydrocortisone cream treats itching from insect bites."})
    generator = fake(replies=lambda m: "ANSWER: A")
    result = run(
        tmp_path,
        tmp_path / "m.json",
        "mirage",
        grid_from_mapping({"scoring": ["generate"]}),
        generators={"default": generator},
        index=index,
    )
    (summary,) = result.summaries
    assert summary.by_subset["mmlu"].value == 1.0 and summary.by_subset["medmcqa"].value == 0.0
    assert "Q0?\nA. x\nB. y" in generator.calls[0].messages[-1].content

    (tmp_path / "k.jsonl").write_text(
        json.dumps(
            {
                "Question": "What helps an itchy bite?",
                "Must_have": ["Hydrocortisone cream treats itching"],
                "Nice_to_have": ["Ice helps"],
            }
        )
        + "\n"
    )
    answer = "SUGGESTIONS:\n1. Hydrocortisone cream treats itching. [E1]"
    result = run(
        tmp_path,
        tmp_path / "k.jsonl",
        "kqa",
        None,
        out=tmp_path / "kqa",
        index=index,
        generators={"default": fake(replies=lambda m: answer)},
        checker=WordChecker(),
    )
    (summary,) = result.summaries
    assert summary.comprehensiveness is not None and summary.comprehensiveness.value == 1.0
    assert summary.hallucination is not None and summary.hallucination.value == 0.0
    assert summary.citation_recall == 1.0


def test_kqa_with_the_sentence_key_template_scores_the_sentences_the_model_names(tmp_path: Path) -> None:
    (tmp_path / "k.jsonl").write_text(
        json.dumps({"Question": "What helps an itchy bite?", "Must_have": ["Hydrocortisone cream treats itching"]})
        + "\n"
    )
    bites = "Insect bites are most common in the summer months. Hydrocortisone cream treats itching from bites."
    index = write_index(tmp_path, {"d1": bites})
    generator = fake(replies=lambda m: "E1.2")
    grid = grid_from_mapping({"templates": ["answer-select"]})
    result = run(tmp_path, tmp_path / "k.jsonl", "kqa", grid, index=index, generators={"default": generator},
                 checker=WordChecker())  # fmt: skip
    (summary,) = result.summaries
    assert "[E1.2] Hydrocortisone cream treats itching from bites." in generator.calls[0].messages[-1].content
    assert generator.calls[0].max_new_tokens == 40  # the template's cap
    assert predictions(result.out)[0]["parsed"] == "Hydrocortisone cream treats itching from bites."
    assert summary.comprehensiveness is not None and summary.comprehensiveness.value == 1.0
    assert summary.citation_recall == 1.0


def test_plots_are_skipped_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(tmp_path, write_pubmedqa(tmp_path / "p.json"), plots=True)
    assert not (result.out / "accuracy_vs_shots.png").exists()
    assert "matplotlib is not installed; plots skipped" in capsys.readouterr().err


def test_cli_records_an_unreachable_generator_and_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pubmedqa(tmp_path / "p.json", PUBMEDQA[:2])
    (tmp_path / "g.yaml").write_text(
        "scoring: [generate]\n"
        "generators:\n  - {name: http, kind: openai, base_url: 'http://127.0.0.1:9/v1', timeout_s: 2, retries: 0}\n"
    )
    out = tmp_path / "run"
    code = clinrag_main(
        [
            "eval",
            "qa",
            "--dataset",
            str(data),
            "--format",
            "pubmedqa",
            "--config",
            str(tmp_path / "g.yaml"),
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
        ]
    )
    assert code == 1
    rows = predictions(out)
    assert len(rows) == 2 and all(r["status"] == "failed" and "GenerationError" in r["error"] for r in rows)
    assert "2 failed" in capsys.readouterr().out
    code = clinrag_main(
        [
            "eval",
            "qa",
            "--dataset",
            str(data),
            "--format",
            "pubmedqa",
            "--out",
            str(out),
            "--pool",
            str(tmp_path / "none.json"),
            "--no-progress",
        ]
    )
    assert code == 2 and "none.json: the example pool file does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        clinrag_main(["eval", "qa", "--dataset", str(data), "--format", "medqa", "--out", str(out)])


def test_importing_the_harness_is_light() -> None:
    import subprocess

    code = (
        "import os, sys; before = dict(os.environ);"
        "import rag.evaluation.qa, rag.cli.eval_qa, rag.evaluation.qa.runner, rag.evaluation.qa.report;"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss', 'matplotlib', 'tqdm', 'yaml')"
        " if m in sys.modules];"
        "assert not heavy, heavy; assert dict(os.environ) == before"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_generator_closed_form_on_four_items(shared_data: Path, tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    result = run_grid(
        shared_data / "pubmedqa" / "pqal_dev.json",
        "pubmedqa",
        tmp_path / "real",
        limit=4,
        progress=False,
        plots=False,
    )
    (summary,) = result.summaries
    assert (summary.scored, summary.failed) == (4, 0)
    rows = predictions(result.out)
    assert all(r["parsed"] in ("yes", "no", "maybe") and len(r["label_scores"]) == 3 for r in rows)
    assert "SmolLM2" in json.loads((result.out / "config.json").read_text())["models"]["generators"]["default"]


def test_kqa_few_shot_uses_the_templates_curated_examples(tmp_path: Path) -> None:
    (tmp_path / "k.jsonl").write_text(
        json.dumps({"Question": "What helps an itchy bite?", "Must_have": ["Hydrocortisone cream treats itching"]})
        + "\n"
    )
    index = write_index(tmp_path, {"d1": "Hydrocortisone cream treats itching from insect bites."})
    grid = grid_from_mapping(
        {"templates": ["answer-few-shot"], "shots": [1, 2], "selectors": ["template", "random"], "pool": {"path": "x"}}
    )
    configs, skipped = expand(grid, "kqa", Settings(), {})
    assert {c.selector for c in configs} == {"template"}
    assert any("curated examples" in s.reason for s in skipped)
    generator = fake(replies=lambda m: "INSUFFICIENT EVIDENCE")
    grid = grid.model_copy(update={"selectors": ["template"], "pool": None})
    result = run(tmp_path, tmp_path / "k.jsonl", "kqa", grid, index=index, generators={"default": generator})
    assert [s.comprehensiveness.value for s in result.summaries if s.comprehensiveness] == [0.0, 0.0]
    assert "Example 1" in generator.calls[0].messages[-1].content
    assert predictions(result.out)[0]["parsed"] == "abstained"


def test_without_a_grid_exactly_one_default_configuration_runs(tmp_path: Path) -> None:
    from rag.evaluation.qa.grid import default_grid

    settings = Settings()
    for fmt, setting, template in (
        ("pubmedqa", "gold", "pubmedqa"),
        ("mirage", "retrieved", "mcq"),
        ("kqa", "retrieved", "answer"),
    ):
        configs, _ = expand(default_grid(fmt, settings), fmt, settings, {})
        (config,) = configs
        assert (config.setting, config.template, config.shots, config.generator.model) == (
            setting,
            template,
            0,
            settings.generator.model,
        )
        assert config.retrieval == ("none" if setting == "gold" else "hybrid")
        assert config.k == (0 if setting == "gold" else settings.answer.evidence_k)
    mirage = {
        "mmlu": {"a": {"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "A"}},
        "medmcqa": {"b": {"question": "R?", "options": {"A": "x", "B": "y"}, "answer": "B"}},
    }
    (tmp_path / "m.json").write_text(json.dumps(mirage))
    assert [i.item_id for i in read_dataset(tmp_path / "m.json", "mirage", "mmlu").items] == ["mmlu/a"]
    with pytest.raises(ConfigError, match="no items in subset 'usmle'; subsets here: medmcqa, mmlu"):
        read_dataset(tmp_path / "m.json", "mirage", "usmle")


def test_label_bias_from_the_adapters_training_card(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    card = {
        "format": "clinrag-training-card/1",
        "calibration": {"pubmedqa-gold": {"labels": ["yes", "no", "maybe"], "bias": [0.0, 0.0, 10.0]}},
    }
    (adapter / "training_card.json").write_text(json.dumps(card))
    grid = grid_from_mapping({"generators": [{"name": "tuned", "adapter": str(adapter), "label_bias": "card"}]})
    result = run(tmp_path, write_pubmedqa(tmp_path / "p.json"), grid=grid, generators={"tuned": fake()})
    (summary,) = result.summaries
    assert summary.accuracy is not None and summary.accuracy.value == pytest.approx(1 / 6)  # always "maybe"
    first = predictions(result.out)[0]
    assert first["parsed"] == "maybe" and first["label_scores"]["yes"] == 0.0  # raw scores, bias kept apart
    assert first["extra"]["label_bias"] == [0.0, 0.0, 10.0]
    config = json.loads((result.out / "config.json").read_text())
    assert config["configurations"][0]["fingerprints"]["adapter"] and config["models"]["label_biases"]


def test_closed_form_prompts_default_to_the_budget_the_adapter_was_trained_at(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    card = {"format": "clinrag-training-card/1", "budgets": {"gold_prompt_tokens": 384, "rag_prompt_tokens": 640}}
    (adapter / "training_card.json").write_text(json.dumps(card))
    settings = Settings()
    tuned = {"name": "tuned", "adapter": str(adapter)}

    def budgets(**grid: Any) -> dict[tuple[str, str, str], int | None]:
        configs, _ = expand(grid_from_mapping(grid), "pubmedqa", settings, {})
        return {(c.generator.name, c.setting, c.scoring): c.budgets.max_prompt_tokens for c in configs}

    axes = {"settings": ["gold", "retrieved"], "retrieval": [{"mode": "none"}, {"mode": "hybrid", "k": 3}]}
    assert budgets(
        generators=[tuned, {"name": "base", "adapter": "none"}], scoring=["likelihood", "generate"], **axes
    ) == {
        ("tuned", "gold", "likelihood"): 384,
        ("tuned", "retrieved", "likelihood"): 640,
        ("tuned", "gold", "generate"): settings.answer.max_prompt_tokens,
        ("tuned", "retrieved", "generate"): settings.answer.max_prompt_tokens,
        ("base", "gold", "likelihood"): settings.answer.max_prompt_tokens,
        ("base", "retrieved", "likelihood"): settings.answer.max_prompt_tokens,
        ("base", "gold", "generate"): settings.answer.max_prompt_tokens,
        ("base", "retrieved", "generate"): settings.answer.max_prompt_tokens,
    }
    assert set(budgets(generators=[tuned], budgets={"max_prompt_tokens": 1024}, **axes).values()) == {1024}
    card["budgets"] = {"gold_prompt_tokens": 100}  # below the harness's floor: not a usable budget
    (adapter / "training_card.json").write_text(json.dumps(card))
    assert budgets(generators=[tuned])[("tuned", "gold", "likelihood")] == settings.answer.max_prompt_tokens
