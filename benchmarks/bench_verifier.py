"""The support checkers side by side on every validation set the trained verifier never saw.

    python benchmarks/bench_verifier.py [--model DIR] [--data ../shared/data] [--threads 2] [--json out.json]
        [--update-card]

Sets: the held-out HealthVer topics and K-QA questions (the split `clinrag train verifier` fixed before training),
SciFact dev and ExpertQA. For the trained cross-encoder and the calibrated checker: 3-class accuracy and
macro-F1, supported-vs-not AUC and F1, refuted pairs judged supported, pairs/s. `--update-card` writes the
trained model's figures into its training card as metrics.validation (replacing what training wrote).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="trained verifier folder (default: the packaged one)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--update-card", action="store_true")
    args = parser.parse_args()

    import torch

    from rag.checking.verifier import NLIVerifier, load_support_checker, resolve_verifier_path
    from rag.core.config import AnswerSettings, EmbedderSettings
    from rag.evaluation.support import evaluate_support
    from rag.models.card import update_card
    from rag.models.embed import load_embedder
    from rag.training.verifier import load_verifier_data

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_verifier_data(args.data)
    calibrated = load_support_checker(AnswerSettings(support_checker="calibrated"), load_embedder(EmbedderSettings()))
    checkers = {"trained": NLIVerifier.load(args.model), "calibrated": calibrated}
    results: dict[str, dict[str, Any]] = {}
    print(f"{'set':<22} {'checker':<11} {'pairs':>5} {'acc':>6} {'mF1':>6} {'AUC':>6} {'F1sup':>6} {'ref->sup':>9} "
          f"{'pairs/s':>8}")  # fmt: skip
    for name, pairs in data.validation.items():
        for label, checker in checkers.items():
            report = evaluate_support(checker, pairs)
            results.setdefault(name, {})[label] = report.to_json()

            def number(value: float | None) -> str:
                return "n/a" if value is None else f"{value:.3f}"

            print(
                f"{name:<22} {label:<11} {report.pairs:>5} {report.accuracy:>6.3f} {number(report.macro_f1):>6} "
                f"{number(report.auc_supported):>6} {report.f1_supported:>6.3f} "
                f"{number(report.refuted_judged_supported):>9} {report.pairs_per_s:>8.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.update_card:
        folder = resolve_verifier_path(args.model)
        update_card(folder, "validation", {k: v["trained"] for k, v in results.items()})
        update_card(folder, "validation_calibrated_checker", {k: v["calibrated"] for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
