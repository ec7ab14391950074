"""Retrieval metrics by hand, qrels/queries loaders, and `clinrag eval retrieval` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rag.cli.main import main
from rag.core.errors import ConfigError
from rag.datasets.beir import load_qrels, load_queries, resolve_beir
from rag.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k, unique_in_order
from rag.evaluation.retrieval import RetrievalTask, evaluate


def test_graded_ndcg_by_hand() -> None:
    qrels = {"a": 3, "b": 1, "c": 0}
    dcg = 1 / math.log2(2) + 3 / math.log2(3)  # ranked b, a
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["b", "a"], qrels) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "b"], qrels) == pytest.approx(1.0)
    assert ndcg_at_k(["c", "x"], qrels) == 0.0
    assert ndcg_at_k(["a"], {}) == 0.0


def test_recall_and_mrr() -> None:
    qrels = {"a": 1, "b": 2, "z": 0}
    assert recall_at_k(["x", "a"], qrels, 10) == 0.5
    assert recall_at_k(["x", "a", "b"], qrels, 2) == 0.5
    assert mrr_at_k(["x", "z", "b"], qrels) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"], qrels) == 0.0
    assert unique_in_order(["d1", "d2", "d1", "d3"]) == ["d1", "d2", "d3"]


def test_loaders(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "fever"}\n\n{"_id": 2, "text": "rash"}\n')
    assert load_queries(tmp_path / "q.jsonl") == {"q1": "fever", "2": "rash"}
    (tmp_path / "beir.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    assert load_qrels(tmp_path / "beir.tsv") == {"q1": {"d1": 2, "d2": 0}}
    (tmp_path / "trec.txt").write_text("q1 0 d1 1\nq2 0 d3 3\n")
    assert load_qrels(tmp_path / "trec.txt") == {"q1": {"d1": 1}, "q2": {"d3": 3}}
    (tmp_path / "bad.tsv").write_text("q1\td1\thigh\n")
    with pytest.raises(ConfigError, match=r"bad\.tsv: line 1"):
        load_qrels(tmp_path / "bad.tsv")
    (tmp_path / "bad.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(ConfigError, match="line 1"):
        load_queries(tmp_path / "bad.jsonl")
    with pytest.raises(ConfigError, match="give --queries"):
        resolve_beir([tmp_path / "corpus.jsonl"], None, None)


def test_evaluate_counts_failures_and_scores() -> None:
    task = RetrievalTask({"q1": "fever", "q2": "?", "q3": "unjudged"}, {"q1": {"d1": 1}, "q2": {"d2": 1}})
    task = task.limited(None)
    assert set(task.queries) == {"q1", "q2"}

    def search(query: str, k: int) -> list[str]:
        if query == "?":
            raise ConfigError("query is empty")
        return ["d9", "d1", "d1"]

    scores = evaluate(task, search, "bm25")
    assert scores.queries == 2 and scores.failed_queries == 1
    assert scores.mrr_at_10 == pytest.approx(0.25) and scores.recall_at_10 == pytest.approx(0.5)


@pytest.mark.slow
def test_eval_command_on_a_beir_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {
        "d1": ("Cystitis", "Nitrofurantoin for five days treats uncomplicated cystitis in women."),
        "d2": ("Asthma", "Inhaled budesonide-formoterol relieves asthma symptoms."),
        "d3": ("Hypertension", "Thiazide diuretics lower blood pressure."),
    }
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x, "metadata": {}}) + "\n" for i, (t, x) in docs.items())
    )
    (beir / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "antibiotic for a bladder infection"}\n{"_id": "q2", "text": "asthma inhaler"}\n'
    )
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\n")
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"index": {"cache_dir": str(tmp_path / "cache")}}))
    code = main(["eval", "retrieval", "--corpus", str(beir), "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["mode"] for r in result["results"]] == ["bm25", "dense", "hybrid"]
    hybrid = result["results"][2]
    assert hybrid["queries"] == 2 and hybrid["ndcg@10"] > 0.5 and hybrid["recall@100"] == 1.0
    assert Path(result["index"]).is_relative_to(tmp_path / "cache")
    # The second run reuses the cached index.
    assert main(["eval", "retrieval", "--corpus", str(beir), "--config", str(config), "--mode", "bm25"]) == 0
    assert "bm25" in capsys.readouterr().out
