"""`clinrag train verifier` and `clinrag eval support` as a user runs them (tiny base model, small files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rag.cli.main import main

ROWS = [
    ("Nitrofurantoin treats cystitis.", "Nitrofurantoin cures cystitis", "Supports", "1"),
    ("Nitrofurantoin treats cystitis.", "Nitrofurantoin never helps cystitis", "Refutes", "1"),
    ("Cystitis is common in women.", "Masks stop influenza", "Neutral", "2"),
    ("Vitamin D is made in skin.", "Vitamin D is made in the skin", "Supports", "3"),
]


def write_healthver(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "evidence", "claim", "label", "topic_ip", "question"])
        for i, (evidence, claim, label, topic) in enumerate(ROWS):
            writer.writerow([i, evidence, claim, label, topic, "q"])
    return path


def fake_data_root(root: Path) -> Path:
    """The shared-data layout with a few rows in each native format."""
    (root / "claims/healthver").mkdir(parents=True)
    write_healthver(root / "claims/healthver/healthver_dev.csv")
    (root / "claims/scifact").mkdir(parents=True)
    corpus = [{"doc_id": 7, "title": "t", "abstract": ["Drug X lowers blood pressure.", "It was safe.", "Mice ran."]}]
    (root / "claims/scifact/corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus), "utf-8")
    claim = {"id": 1, "claim": "Drug X lowers blood pressure", "cited_doc_ids": [7],
             "evidence": {"7": [{"sentences": [0], "label": "SUPPORT"}]}}  # fmt: skip
    nei = {"id": 2, "claim": "Mice prefer cheese", "cited_doc_ids": [7], "evidence": {}}
    for name, offset in (("claims_train.jsonl", 0), ("claims_dev.jsonl", 10)):  # claim ids never repeat across files
        lines = [json.dumps({**c, "id": c["id"] + offset}) for c in (claim, nei)]
        (root / "claims/scifact" / name).write_text("\n".join(lines) + "\n", "utf-8")
    (root / "kqa").mkdir()
    with (root / "kqa/nli_medical_annotator.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "Question", "llm_x", "answer", "claim", "category_x", "majority_label"])
        writer.writerow([0, "What is Lexapro?", "gpt4", "Lexapro is an SSRI.", "Escitalopram is an SSRI", "Must_have",
                         "Entailment"])  # fmt: skip
    (root / "expertqa").mkdir()
    row = {"question": "q", "answers": {"sys": {"claims": [
        {"claim_string": "Drug X lowers blood pressure.", "evidence": ["[1] https://x.org\n\nDrug X lowers it."],
         "support": "Complete"}]}}}  # fmt: skip
    (root / "expertqa/expertqa_medicine_dev.jsonl").write_text(json.dumps(row) + "\n", "utf-8")
    return root


def test_train_then_evaluate_with_the_cli(tiny_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fake_data_root(tmp_path / "data")
    out = tmp_path / "verifier"
    code = main(["train", "verifier", "--out", str(out), "--data", str(data), "--base", str(tiny_base),
                 "--epochs", "1", "--rank", "2", "--quiet", "--json"])  # fmt: skip
    assert code == 0
    card = json.loads(capsys.readouterr().out)
    assert card["base_model"] == str(tiny_base) and card["training"]["steps"] >= 1
    assert set(card["metrics"]["validation"]) == {"healthver-validation", "scifact-dev", "kqa-nli-validation",
                                                  "expertqa"}  # fmt: skip
    assert len(card["data"]["files_sha256"]) == 6 and card["data"]["train"]["pairs"] > 0
    assert (out / "training_card.json").is_file() and (out / "weights.safetensors").is_file()

    csv_file = write_healthver(tmp_path / "hv.csv")
    code = main(["eval", "support", str(csv_file), "--format", "healthver", "--checker", "trained",
                 "--model", str(out), "--json", "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    (trained,) = report["reports"]
    assert report["pairs"] == 4 and trained["pairs"] == 4 and trained["refuted_pairs"] == 1
    assert sum(sum(row.values()) for row in trained["confusion"].values()) == 4
    code = main(["eval", "support", str(csv_file), "--format", "healthver", "--checker", "trained",
                 "--model", str(out), "--quiet"])  # fmt: skip
    assert code == 0 and "refuted judged supported" in capsys.readouterr().out


def test_cli_errors_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "verifier", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "none")]) == 2
    assert "pass --data" in capsys.readouterr().err
    csv_file = write_healthver(tmp_path / "hv.csv")
    assert main(["eval", "support", str(csv_file), "--format", "healthver", "--model", str(tmp_path / "none"),
                 "--checker", "trained"]) == 2  # fmt: skip
    assert "cannot read the cross-encoder config" in capsys.readouterr().err
    assert main(["eval", "support", str(tmp_path / "missing.csv"), "--format", "healthver"]) == 2
    assert "cannot read HealthVer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "support", str(csv_file), "--format", "fever"])
