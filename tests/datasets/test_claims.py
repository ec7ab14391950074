"""Claim-verification sets read as published, the fixed train/validation split, and the support metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.checking.verdict import Verdict
from rag.core.errors import ConfigError
from rag.datasets.claims import read_healthver, read_kqa_nli, read_pairs, read_scifact, select_split, split_of
from rag.evaluation.support import format_report, roc_auc, score_verdicts
from rag.testing import ScriptedJudge


def test_real_sets_read_with_their_published_counts(shared_data: Path) -> None:
    healthver = read_pairs("healthver", shared_data / "claims/healthver/healthver_dev.csv")
    assert len(healthver) == 1917
    assert {lab: sum(p.label == lab for p in healthver) for lab in ("supports", "refutes", "neutral")} == {
        "supports": 533, "refutes": 391, "neutral": 993}  # fmt: skip
    scifact = read_pairs("scifact", shared_data / "claims/scifact/claims_dev.jsonl")
    assert sum(p.label == "supports" for p in scifact) == 216 and sum(p.label == "refutes" for p in scifact) == 122
    assert sum(p.label == "neutral" for p in scifact) >= 112  # one pair per cited abstract of each NEI claim
    kqa = read_pairs("kqa-nli", shared_data / "kqa/nli_medical_annotator.csv")
    assert len(kqa) == 399 and sum(p.label == "refutes" for p in kqa) == 12
    expertqa = read_pairs("expertqa", shared_data / "expertqa/expertqa_medicine_dev.jsonl")
    assert expertqa and {p.label for p in expertqa} == {"supports", "neutral"}


def test_training_extras_add_context_and_hard_neutrals(shared_data: Path) -> None:
    path = shared_data / "claims/scifact/claims_train.jsonl"
    plain, extra = read_scifact(path), read_scifact(path, context=True, hard_neutrals=True)
    assert len(extra) > len(plain)
    assert sum(p.label == "refutes" for p in extra) == 2 * sum(p.label == "refutes" for p in plain)


def test_split_is_by_group_fixed_and_disjoint(shared_data: Path) -> None:
    pairs = read_healthver(shared_data / "claims/healthver/healthver_dev.csv")
    train, validation = select_split(pairs, "train"), select_split(pairs, "validation")
    assert len(train) + len(validation) == len(pairs) and 0.1 < len(validation) / len(pairs) < 0.35
    assert not {p.group for p in train} & {p.group for p in validation}
    assert [split_of(p) for p in pairs] == [split_of(p) for p in reversed(pairs)][::-1]  # order-independent


def test_bad_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "hv.csv"
    bad.write_text("id,evidence,claim\n1,a,b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"hv\.csv.*HealthVer"):
        read_healthver(bad)
    bad.write_text("id,evidence,claim,label,topic_ip\n1,a,b,Maybe,3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2: unknown label"):
        read_healthver(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_kqa_nli(tmp_path / "missing.csv")
    claims = tmp_path / "claims.jsonl"
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"doc_id": 1, "abstract": ["A."]}) + "\n", encoding="utf-8")
    claims.write_text('{"id": 1, "claim": "x", "evidence": {}}\n{broken\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        read_scifact(claims)
    with pytest.raises(ConfigError, match="unknown claim-pair format"):
        read_pairs("fever", claims)


def test_auc_counts_ties_half() -> None:
    assert roc_auc([0.9, 0.8, 0.1], [True, False, False]) == 1.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([0.2, 0.9, 0.9, 0.1], [True, True, False, False]) == pytest.approx(0.625)
    assert roc_auc([0.1, 0.2], [True, True]) is None


def test_report_figures_by_hand() -> None:
    def v(label: str, support: float) -> Verdict:
        return Verdict(label, (support, 0.0, 1.0 - support))  # type: ignore[arg-type]

    gold = ["supports", "supports", "refutes", "refutes", "neutral", "neutral"]
    verdicts = [v("supports", 0.9), v("neutral", 0.4), v("supports", 0.8), v("refutes", 0.1),
                v("neutral", 0.2), v("neutral", 0.3)]  # fmt: skip
    report = score_verdicts(gold, verdicts, "hand", seconds=2.0)
    assert report.accuracy == pytest.approx(4 / 6)
    # supports: tp 1, fp 1, fn 1 -> 0.5; refutes: tp 1, fn 1 -> 2/3; neutral: tp 2, fp 1 -> 0.8
    assert report.f1_per_label == pytest.approx({"supports": 0.5, "refutes": 2 / 3, "neutral": 0.8})
    assert report.macro_f1 == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert report.refuted_judged_supported == 0.5 and report.refuted_pairs == 2
    assert report.auc_supported == pytest.approx(0.875)  # positives 0.9, 0.4 vs 0.8, 0.1, 0.2, 0.3: 7 of 8
    assert report.confusion["refutes"] == {"supports": 1, "refutes": 1, "neutral": 0}
    assert report.pairs_per_s == 3.0
    assert "refuted judged supported 0.500 of 2" in format_report(report)


def test_scripted_judge_is_deterministic() -> None:
    judge = ScriptedJudge({"never": "refutes", "treats": "supports"})
    verdicts = judge.judge([("X never works", "e"), ("X treats Y", "e"), ("other", "e")])
    assert [x.label for x in verdicts] == ["refutes", "supports", "neutral"]
    assert judge.supported(float(judge.score([("X treats Y", "e")])[0]))
