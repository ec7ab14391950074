"""`clinrag train verifier`: train the cross-encoder support checker on the CPU and write its training card."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rag.cli.options import add_data_option, add_limit_option, add_out_option, default_data_root
from rag.cli.train_questions import register_questions
from rag.cli.train_reranker import register_reranker
from rag.training.crossencoder import add_training_arguments


def register(commands: Any) -> None:
    group = commands.add_parser(
        "train",
        help="train the project's own models (support checker, reranker)",
        description="Train the project's models.",
    )
    sub = group.add_subparsers(dest="train_command", metavar="MODEL", required=True)
    verifier = sub.add_parser(
        "verifier",
        help="the cross-encoder support checker (supports / refutes / neutral)",
        description="Fine-tune a MiniLM cross-encoder (LoRA + a 3-way head) on HealthVer, SciFact and K-QA NLI "
        "pairs; validation groups are held out before training. Writes the artefact (crossencoder.json, "
        "weights.safetensors) and training_card.json with validation metrics into --out.",
    )
    add_out_option(verifier, "folder for the model and its card")
    add_data_option(verifier, "the shared data folder (default ../shared/data)")
    add_training_arguments(verifier, epochs=4.0, time_limit_min=45.0)
    add_limit_option(verifier, "train on the first N pairs only (smoke runs)")
    verifier.add_argument("--no-eval", action="store_true", help="skip the validation sets")
    verifier.add_argument(
        "--no-negations", action="store_true", help="no polarity-flipped copies of supported pairs as 'refutes'"
    )
    verifier.add_argument(
        "--no-hard-neutrals",
        action="store_true",
        help="leave out the neutral pairs of SciFact claims and the abstract sentences outside their rationale that "
        "share most words (measured: better on SciFact dev, worse macro-F1 on held-out HealthVer topics)",
    )
    verifier.set_defaults(handler=run_train_verifier)
    register_reranker(sub)
    register_questions(sub)


def run_train_verifier(args: argparse.Namespace) -> int:
    import torch

    from rag.checking.verdict import LABELS
    from rag.checking.verifier import NLIVerifier
    from rag.core.errors import ConfigError
    from rag.evaluation.support import evaluate_support, format_report
    from rag.models.card import TrainingCard
    from rag.models.crossencoder import CrossEncoderConfig
    from rag.training.crossencoder import TrainConfig
    from rag.training.verifier import data_summary, load_verifier_data, train_verifier

    if args.epochs <= 0 or args.batch_size < 1 or args.lr <= 0:
        raise ConfigError("--epochs and --lr must be > 0 and --batch-size >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_verifier_data(
        args.data or default_data_root(), negations=not args.no_negations, hard_neutrals=not args.no_hard_neutrals
    )
    if args.limit:
        data = type(data)(data.train[: args.limit], data.validation, data.files, data.negated)
    config = TrainConfig.from_arguments(args)
    model_config = CrossEncoderConfig(
        labels=LABELS, base_model=args.base, lora_rank=args.rank, lora_alpha=2 * args.rank
    )
    model, training = train_verifier(
        data, args.out, config, model_config=model_config, progress=not args.quiet, allow_download=args.allow_download
    )
    metrics: dict[str, Any] = {}
    if not args.no_eval:
        verifier = NLIVerifier(model, name=f"cross-encoder:{args.out.name}")
        for name, pairs in data.validation.items():
            report = evaluate_support(verifier, pairs, progress=not args.quiet)
            metrics[name] = report.to_json()
            if not args.json:
                print(f"[{name}]\n{format_report(report)}")
    weights = args.out / "weights.safetensors"
    card = TrainingCard(
        base_model=model_config.base_model,
        seed=args.seed,
        config={"train": config.to_json(), "model": model_config.to_json(), "input": "[CLS] evidence [SEP] claim"},
        budgets={"time_limit_minutes": args.time_limit, "artefact_limit_mb": 10},
        data=data_summary(data),
        timings={"train_s": training["train_seconds"], "total_s": round(time.perf_counter() - started, 1)},
        metrics={"validation": metrics},
        adapter={"weights_bytes": weights.stat().st_size, "where": "CPU (this machine); no GPU was used"},
        training=training,
    )
    card.write(args.out)
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
    else:
        print(
            f"model: {args.out} ({weights.stat().st_size / 1e6:.2f} MB weights); {training['steps']} steps, "
            f"training {training['train_seconds']:.0f} s, total {card.timings['total_s']:.0f} s"
        )
    return 0
