"""`clinrag eval support`: score support checkers on labelled claim/evidence pairs in their native formats."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rag.cli.options import add_format_option, add_json_flag, add_limit_option, add_threads_option
from rag.datasets.claims import FORMATS

CHECKERS = ("trained", "calibrated", "both")


def register(sub: Any) -> None:
    support = sub.add_parser(
        "support",
        help="3-class and supported-vs-not scores of the support checker on claim/evidence pairs",
        description="Judge every (claim, evidence) pair of a claim-verification file and report 3-class accuracy "
        "and macro-F1, supported-vs-not AUC and F1, the share of refuted pairs judged supported, the confusion "
        "matrix and pairs/s. By default both the trained cross-encoder and the calibrated checker are scored.",
    )
    support.add_argument("file", type=Path, metavar="FILE", help="the data file in its native format")
    add_format_option(support, FORMATS)
    support.add_argument("--corpus", type=Path, metavar="FILE", help="SciFact corpus.jsonl (default: beside FILE)")
    support.add_argument("--checker", choices=CHECKERS, default="both", help="which checker(s) to score (default both)")
    support.add_argument(
        "--model", default="default", metavar="DIR", help="trained verifier folder (default: the packaged one)"
    )
    support.add_argument(
        "--split",
        choices=("all", "train", "validation"),
        default="all",
        help="all pairs (default), or the training / held-out part of `clinrag train verifier`'s split",
    )
    add_limit_option(support, "only the first N pairs")
    add_threads_option(support)
    add_json_flag(support)
    support.add_argument("--quiet", action="store_true", help="no progress bar")
    support.set_defaults(handler=run_support_eval)


def run_support_eval(args: argparse.Namespace) -> int:
    from rag.checking.verdict import SupportJudge
    from rag.core.errors import ConfigError
    from rag.datasets.claims import VALIDATION_SHARE, read_pairs, select_split
    from rag.evaluation.support import evaluate_support, format_report

    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be >= 1")
    pairs = select_split(read_pairs(args.format, args.file, corpus=args.corpus), args.split, VALIDATION_SHARE)
    pairs = pairs[: args.limit] if args.limit else pairs
    if not pairs:
        raise ConfigError(f"{args.file}: no pairs to score (split {args.split!r}); check the file and --split")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    checkers: list[SupportJudge] = []
    if args.checker in ("trained", "both"):
        from rag.checking.verifier import NLIVerifier

        checkers.append(NLIVerifier.load(args.model))
    if args.checker in ("calibrated", "both"):
        from rag.checking.verifier import load_support_checker
        from rag.core.config import AnswerSettings, EmbedderSettings
        from rag.models.embed import load_embedder

        calibrated = AnswerSettings(support_checker="calibrated")
        checkers.append(load_support_checker(calibrated, load_embedder(EmbedderSettings())))
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    reports = [evaluate_support(checker, pairs, progress=progress) for checker in checkers]
    if args.json:
        payload = {"file": str(args.file), "format": args.format, "split": args.split, "pairs": len(pairs),
                   "reports": [r.to_json() for r in reports]}  # fmt: skip
        print(json.dumps(payload, indent=2))
    else:
        print(f"{args.file} ({args.format}, split {args.split}): {len(pairs)} pairs")
        for report in reports:
            print(format_report(report))
    return 0
