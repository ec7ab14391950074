"""Citation support checker: cross-validated quality on ExpertQA medicine (dev), a check on K-QA physician NLI
labels, and the shipped calibration.

ExpertQA pairs are (claim, quoted evidence passage, expert support label) wherever the passage text exists: gpt4
and bing_chat cite bare URLs, which cannot be judged offline. Supported = "Complete"; a variant also counts
"Partial". Experts could open the cited page, so their label is not only about the quoted passage.
K-QA's nli_medical_annotator.csv has physicians judging whether an LLM answer entails a must-have statement from
the text alone: (statement, answer, majority label), supported = Entailment.

Features come from the real all-MiniLM-L6-v2. Folds are grouped by question (no question on both sides), the
threshold is the best-F1 one on the training folds; precision, recall, F1 and accuracy pool each repeat's
out-of-fold decisions, AUC is the mean within-fold AUC (pooled scores would mix intercepts fitted on training
folds whose base rate is anti-correlated with the test fold's). Figures: mean ± standard deviation over repeats.

    pip install -e .
    HF_HUB_OFFLINE=1 python benchmarks/bench_support.py [--json out.json] [--write-calibration]
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.checking.support import (
    COMBINED_FEATURES,
    EMBEDDING_FEATURES,
    LEXICAL_FEATURES,
    FitCounts,
    SupportCalibration,
    clean_claim,
    doses_in,
    support_features,
    write_calibrations,
)
from rag.datasets.expertqa import ExpertQAReadout, read_expertqa
from rag.models.embed import Embedder
from rag.text.tokenize import ClinicalTokenizer, TokenizerConfig
from rag.training.calibration import fit_calibration

Floats = npt.NDArray[np.float64]
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXPERTQA = SHARED / "expertqa" / "expertqa_medicine_dev.jsonl"
KQA_NLI = SHARED / "kqa" / "nli_medical_annotator.csv"
CALIBRATION = ROOT / "rag" / "data" / "support_calibration.json"
MODELS = {"lexical": LEXICAL_FEATURES, "embedding": EMBEDDING_FEATURES, "combined": COMBINED_FEATURES}
VARIANTS = {"Complete": ("Complete",), "Complete+Partial": ("Complete", "Partial")}
METRICS = ("precision", "recall", "f1", "unsupported_f1", "accuracy", "auc")


@dataclass(frozen=True)
class Labelled:
    """Features (COMBINED_FEATURES columns), 0/1 labels and question groups of one data set."""

    name: str
    x: Floats
    y: Floats
    groups: tuple[str, ...]

    def counts(self, positive_labels: tuple[str, ...]) -> FitCounts:
        return FitCounts(self.name, len(self.y), int(self.y.sum()), len(set(self.groups)), positive_labels)


def auc(scores: Floats, labels: Floats) -> float:
    """Probability that a random supported pair outscores a random unsupported one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def binary_metrics(predicted: npt.NDArray[np.bool_], labels: Floats) -> dict[str, float]:
    truth = labels == 1
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    tn = (~predicted & ~truth).sum()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "unsupported_f1": float(2 * tn / (2 * tn + fn + fp)) if tn else 0.0,
        "accuracy": float((tp + tn) / len(labels)),
    }


def grouped_folds(groups: Sequence[str], k: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Row indices of each test fold; every question's rows fall in one fold."""
    questions = rng.permutation(sorted(set(groups)))
    fold_of = {str(q): i % k for i, q in enumerate(questions)}
    return [np.flatnonzero([fold_of[g] == f for g in groups]) for f in range(k)]


def cross_validate(
    data: Labelled, names: Sequence[str], args: argparse.Namespace, *, constrain: bool
) -> dict[str, Any]:
    """[mean, std] over repeats of each metric."""
    x = data.x[:, [COMBINED_FEATURES.index(f) for f in names]]
    rng = np.random.default_rng(args.seed)
    runs = []
    for _ in range(args.repeats):
        scores, predicted = np.zeros(len(data.y)), np.zeros(len(data.y), dtype=bool)
        fold_aucs = []
        for test in grouped_folds(data.groups, args.folds, rng):
            train = np.setdiff1d(np.arange(len(data.y)), test)
            model = fit_calibration(x[train], data.y[train], feature_names=names, l2=args.l2, constrain_signs=constrain)
            scores[test] = model.probabilities(x[test])
            predicted[test] = scores[test] >= model.threshold
            if 0 < data.y[test].sum() < len(test):
                fold_aucs.append(auc(scores[test], data.y[test]))
        runs.append({**binary_metrics(predicted, data.y), "auc": float(np.mean(fold_aucs))})
    return {m: [float(np.mean([r[m] for r in runs])), float(np.std([r[m] for r in runs]))] for m in METRICS}


def baseline(data: Labelled, labels: str) -> dict[str, Any]:
    base = float(data.y.mean())
    figures = {
        "precision": base,
        "recall": 1.0,
        "f1": 2 * base / (1 + base),
        "unsupported_f1": 0.0,
        "accuracy": base,
        "auc": 0.5,
    }
    return {
        "data": data.name,
        "labels": labels,
        "model": "always supported",
        "base_rate": base,
        **{m: [v, 0.0] for m, v in figures.items()},
    }


def cv_rows(data: Labelled, labels: str, args: argparse.Namespace, *, free_signs: bool) -> list[dict[str, Any]]:
    rows = [baseline(data, labels)]
    for constrain in (True, False) if free_signs else (True,):
        for model, names in MODELS.items():
            figures = cross_validate(data, names, args, constrain=constrain)
            rows.append(
                {
                    "data": data.name,
                    "labels": labels,
                    "model": model + ("" if constrain else " (signs free)"),
                    "base_rate": float(data.y.mean()),
                    **figures,
                }
            )
    return rows


def transfer_rows(train: Labelled, test: Labelled, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fitted on all of `train` (threshold included), scored once on `test`: no fitting on the test set."""
    rows = []
    for model, names in MODELS.items():
        columns = [COMBINED_FEATURES.index(f) for f in names]
        fitted = fit_calibration(train.x[:, columns], train.y, feature_names=names, l2=args.l2)
        scores = fitted.probabilities(test.x[:, columns])
        figures = {**binary_metrics(scores >= fitted.threshold, test.y), "auc": auc(scores, test.y)}
        rows.append(
            {
                "data": f"{test.name} <- fitted on {train.name}",
                "labels": "Entailment",
                "model": model,
                "base_rate": float(test.y.mean()),
                **{m: [v, 0.0] for m, v in figures.items()},
            }
        )
    return rows


def print_rows(title: str, rows: Sequence[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'labels':<17} {'model':<24} {'base':>5} " + " ".join(f"{m:>14}" for m in METRICS))
    for row in rows:
        cells = " ".join(f"{row[m][0]:>7.3f} ±{row[m][1]:.3f}" for m in METRICS)
        print(f"{row['labels']:<17} {row['model']:<24} {row['base_rate']:>5.3f} {cells}")


def describe(readout: ExpertQAReadout) -> dict[str, Any]:
    examples = readout.examples
    return {
        "claims": readout.claims,
        "url_only_evidence": readout.url_only,
        "no_evidence": readout.uncited,
        "passage_but_unjudged": readout.unjudged,
        "pairs": len(examples),
        "questions": len({e.question for e in examples}),
        "labels": dict(collections.Counter(e.label for e in examples).most_common()),
        "systems": dict(collections.Counter(e.system for e in examples).most_common()),
        "claims_stating_a_dose": sum(bool(doses_in(clean_claim(e.claim))) for e in examples),
    }


def read_kqa_nli(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def featurize(pairs: Sequence[tuple[str, str]], embedder: Embedder) -> Floats:
    return support_features(pairs, ClinicalTokenizer(TokenizerConfig(stem=True, stopwords=True)), embedder)


def write_calibration(
    expertqa: Labelled,
    lexical_on: Labelled,
    positive: dict[str, tuple[str, ...]],
    embedder: str,
    args: argparse.Namespace,
) -> None:
    today = datetime.date.today().isoformat()
    models: dict[str, SupportCalibration] = {}
    for name, data, fitted_with in (("combined", expertqa, embedder), ("lexical", lexical_on, None)):
        names = MODELS[name]
        models[name] = fit_calibration(
            data.x[:, [COMBINED_FEATURES.index(f) for f in names]],
            data.y,
            feature_names=names,
            embedder=fitted_with,
            l2=args.l2,
            fitted_on=data.counts(positive[data.name]),
            fitted_at=today,
        )
    CALIBRATION.parent.mkdir(parents=True, exist_ok=True)
    write_calibrations(CALIBRATION, models)
    print(f"\nwrote {CALIBRATION.relative_to(ROOT)}")
    for name, model in models.items():
        weights = ", ".join(f"{f}={w:+.3f}" for f, w in zip(model.features, model.weights, strict=True))
        print(
            f"  {name} ({model.fitted_on.dataset}): {weights}, intercept={model.intercept:+.3f}, "
            f"threshold={model.threshold:.3f}"
        )


def load_sets(args: argparse.Namespace, embedder: Embedder) -> tuple[dict[str, Labelled], Labelled, dict[str, Any]]:
    """ExpertQA under each label variant, K-QA NLI, and their counts (printed as read)."""
    readout = read_expertqa(args.expertqa)
    examples = readout.examples
    kqa = read_kqa_nli(args.kqa_nli)
    counts = {
        "expertqa": describe(readout),
        "kqa_nli": {
            "pairs": len(kqa),
            "questions": len({r["Question"] for r in kqa}),
            "labels": dict(collections.Counter(r["majority_label"] for r in kqa).most_common()),
            "claims_stating_a_dose": sum(bool(doses_in(clean_claim(r["claim"]))) for r in kqa),
        },
    }
    print(json.dumps(counts, indent=1))
    x_expertqa = featurize([(e.claim, e.evidence) for e in examples], embedder)
    x_kqa = featurize([(r["claim"], r["answer"]) for r in kqa], embedder)
    kqa_data = Labelled(
        "kqa_nli_medical_annotator",
        x_kqa,
        np.array([r["majority_label"] == "Entailment" for r in kqa], dtype=np.float64),
        tuple(r["Question"] for r in kqa),
    )
    expertqa = {
        variant: Labelled(
            "expertqa_medicine_dev",
            x_expertqa,
            np.array([e.supported(positive) for e in examples], dtype=np.float64),
            tuple(str(e.question) for e in examples),
        )
        for variant, positive in VARIANTS.items()
    }
    return expertqa, kqa_data, counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--expertqa", type=Path, default=EXPERTQA)
    parser.add_argument("--kqa-nli", type=Path, default=KQA_NLI)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="repeats of the random grouped fold assignment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l2", type=float, default=1.0, help="L2 penalty on standardised weights")
    parser.add_argument("--json", type=Path, help="write counts and figures here")
    parser.add_argument("--write-calibration", action="store_true", help=f"fit on all pairs, write {CALIBRATION}")
    parser.add_argument(
        "--lexical-on",
        choices=("kqa", "expertqa"),
        default="kqa",
        help="data the shipped lexical fallback is fitted on (the combined model: ExpertQA)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model only: never a download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from rag.core.config import EmbedderSettings
    from rag.models.embed import load_embedder

    embedder = load_embedder(EmbedderSettings())
    expertqa, kqa_data, counts = load_sets(args, embedder)
    for data in (expertqa["Complete"], kqa_data):
        feature_auc = {name: round(auc(data.x[:, j], data.y), 3) for j, name in enumerate(COMBINED_FEATURES)}
        counts[f"feature_auc_unfitted_{data.name}"] = feature_auc
        print(f"AUC of each feature alone, all pairs, no fitting ({data.name}):", feature_auc)
    print(f"{args.folds}-fold CV grouped by question, {args.repeats} repeats, L2 {args.l2}, embedder {embedder.name}")

    sections = {
        "ExpertQA medicine dev, cross-validated": [
            row for variant, data in expertqa.items() for row in cv_rows(data, variant, args, free_signs=True)
        ],
        "K-QA physician NLI, cross-validated (fitted on K-QA folds)": cv_rows(
            kqa_data, "Entailment", args, free_signs=False
        ),
        "K-QA physician NLI, scored by models fitted on all ExpertQA (Complete)": transfer_rows(
            expertqa["Complete"], kqa_data, args
        ),
    }
    for title, rows in sections.items():
        print_rows(title, rows)
    if args.json:
        report = {
            "expertqa": str(args.expertqa),
            "kqa_nli": str(args.kqa_nli),
            "embedder": embedder.name,
            "folds": args.folds,
            "repeats": args.repeats,
            "seed": args.seed,
            "l2": args.l2,
            "counts": counts,
            "results": sections,
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.write_calibration:
        positive = {kqa_data.name: ("Entailment",), expertqa["Complete"].name: VARIANTS["Complete"]}
        lexical_on = kqa_data if args.lexical_on == "kqa" else expertqa["Complete"]
        write_calibration(expertqa["Complete"], lexical_on, positive, embedder.name, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
