"""How well a support checker tells support from contradiction, on labelled (claim, evidence) pairs.

Three-class accuracy and macro-F1 (over the labels the gold set holds), supported-vs-not ROC AUC on the probability
of support (ties counted half, Mann-Whitney), F1 of "supported", the share of refuted pairs judged supported, the
confusion matrix (gold rows, predicted columns) and throughput. A checker that cannot say "refutes" (the calibrated
fallback) is scored the same way: its "not supported" is counted as neutral.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.checking.verdict import LABELS, SupportJudge, Verdict
from rag.datasets.claims import ClaimPair


@dataclass(frozen=True)
class SupportReport:
    checker: str
    pairs: int
    gold_counts: dict[str, int]
    accuracy: float
    macro_f1: float | None  # None when the gold set holds fewer than two labels
    f1_per_label: dict[str, float]
    auc_supported: float | None  # None when the gold set is all one side
    f1_supported: float
    refuted_judged_supported: float | None  # share of gold "refutes" predicted "supports"; None without refutes
    refuted_pairs: int
    confusion: dict[str, dict[str, int]]  # gold -> predicted -> count
    seconds: float
    pairs_per_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def roc_auc(scores: npt.ArrayLike, positives: npt.ArrayLike) -> float | None:
    """Probability that a random positive outscores a random negative (ties half); None if a side is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def score_verdicts(gold: Sequence[str], verdicts: Sequence[Verdict], checker: str, seconds: float) -> SupportReport:
    """Every figure of the report from gold labels and verdicts; pure."""
    if len(gold) != len(verdicts):
        raise ValueError(f"{len(gold)} gold labels but {len(verdicts)} verdicts")
    predicted: list[str] = [v.label for v in verdicts]
    confusion: dict[str, dict[str, int]] = {g: dict.fromkeys(LABELS, 0) for g in LABELS}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    present = [label for label in LABELS if any(g == label for g in gold)]

    def label_f1(label: str) -> float:
        others = [other for other in LABELS if other != label]
        return f1(confusion[label][label], sum(confusion[g][label] for g in others),
                  sum(confusion[label][p] for p in others))  # fmt: skip

    per_label: dict[str, float] = {label: label_f1(label) for label in present}
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    positives = [g == "supports" for g in gold]
    refuted = [p for g, p in zip(gold, predicted, strict=True) if g == "refutes"]
    return SupportReport(
        checker=checker,
        pairs=len(gold),
        gold_counts={label: sum(g == label for g in gold) for label in LABELS},
        accuracy=correct / len(gold) if gold else 0.0,
        macro_f1=float(np.mean(list(per_label.values()))) if len(present) >= 2 else None,
        f1_per_label=per_label,
        auc_supported=roc_auc([v.support for v in verdicts], positives),
        f1_supported=label_f1("supports"),
        refuted_judged_supported=(sum(p == "supports" for p in refuted) / len(refuted)) if refuted else None,
        refuted_pairs=len(refuted),
        confusion=confusion,
        seconds=seconds,
        pairs_per_s=len(gold) / seconds if seconds > 0 else 0.0,
    )


def evaluate_support(
    judge: SupportJudge, pairs: Sequence[ClaimPair], *, batch_size: int = 64, progress: bool = False
) -> SupportReport:
    """Judge every pair (in batches, with a progress bar on request) and score the verdicts."""
    from tqdm import tqdm

    verdicts: list[Verdict] = []
    started = time.perf_counter()
    with tqdm(total=len(pairs), desc=f"judging ({judge.name})", unit="pair", disable=not progress) as bar:
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            verdicts += judge.judge([(p.claim, p.evidence) for p in batch])
            bar.update(len(batch))
    seconds = time.perf_counter() - started
    return score_verdicts([p.label for p in pairs], verdicts, judge.name, seconds)


def format_report(report: SupportReport) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"checker {report.checker}: {report.pairs} pairs "
        + ", ".join(f"{k} {v}" for k, v in report.gold_counts.items()),
        f"  accuracy {report.accuracy:.3f}  macro-F1 {number(report.macro_f1)}  AUC(supported) "
        f"{number(report.auc_supported)}  F1(supported) {report.f1_supported:.3f}",
        f"  refuted judged supported {number(report.refuted_judged_supported)} of {report.refuted_pairs}  "
        f"({report.pairs_per_s:.1f} pairs/s, {report.seconds:.1f} s)",
        "  confusion (rows gold, columns predicted): " + " ".join(f"{label:>9}" for label in LABELS),
    ]
    for gold in LABELS:
        lines.append(f"  {gold:>41}: " + " ".join(f"{report.confusion[gold][p]:>9}" for p in LABELS))
    return "\n".join(lines)
