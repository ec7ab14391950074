"""`clinrag finetune` (LoRA on the CPU) and `clinrag finetune-eval` (base vs fine-tuned on the validation split).

The command line composes `rag` and `indexer`: without --index, an index over the PubMedQA and MedQuAD corpora
is built once into the cache (re-using cached embeddings) and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from rag.cli.options import (
    add_data_option,
    add_dtype_option,
    add_index_option,
    add_json_flag,
    add_max_new_tokens_option,
    add_no_progress_flag,
    add_out_option,
    add_seed_option,
    add_threads_option,
    default_data_root,
)
from rag.core.config import DEFAULT_GENERATOR


def register(commands: Any) -> None:
    tune = commands.add_parser(
        "finetune",
        help="LoRA-fine-tune the local generator on CPU (PubMedQA + MedQuAD, engine templates)",
        description="Fine-tune the local generator with LoRA on the CPU. Examples are rendered with the engine's "
        "own templates and real retrieved evidence; a seeded split of PubMedQA dev is held out for validation and "
        "never trained on. Writes the adapter (safetensors) and training_card.json into --out.",
    )
    add_out_option(tune, "folder for the adapter and card")
    _common(tune)
    tune.add_argument("--epochs", type=float, default=3.0, help="passes over the examples (default 3)")
    tune.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps")
    tune.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    tune.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    tune.add_argument("--lora-layers", type=int, default=12, help="adapt the top N decoder layers (default 12; 0: all)")
    tune.add_argument("--accumulation", type=int, default=8, help="examples per optimizer step (default 8)")
    tune.add_argument(
        "--label-weight", type=float, default=4.0, help="loss weight of each reply's decision line (default 4)"
    )
    tune.add_argument(
        "--token-norm",
        type=float,
        default=64.0,
        help="an example's loss is its weighted token sum / this (default 64; 0: the mean per example)",
    )
    tune.add_argument("--balance", type=float, default=0.5, help="0: labels as they come, 1: balanced (default 0.5)")
    tune.add_argument("--medquad", type=int, default=200, help="MedQuAD treatment examples (default 200)")
    tune.add_argument("--abstain", type=int, default=50, help="abstention examples (default 50)")
    tune.add_argument("--rag-share", type=float, default=0.25, help="share of PubMedQA items also in the RAG setting")
    tune.add_argument("--fp32", action="store_true", help="train against fp32 base weights (default bf16: faster)")
    tune.add_argument(
        "--conclusion-share",
        type=float,
        default=0.0,
        help="share of PubMedQA items also shown with results + their conclusion (default 0)",
    )
    tune.add_argument("--calibration", type=int, default=50, help="training items held out to fit label biases")
    tune.add_argument("--no-before", action="store_true", help="skip scoring the base model before training")
    tune.set_defaults(handler=run_finetune_command)

    evaluate = commands.add_parser(
        "finetune-eval",
        help="base vs fine-tuned generator on the held-out validation split",
        description="Score the base model and the fine-tuned adapter on the validation split recorded in the "
        "adapter's training card: PubMedQA accuracy and macro-F1 (gold contexts and retrieved evidence, label "
        "likelihood), and format validity, citation validity and support rate of generated answers.",
    )
    evaluate.add_argument("--adapter", required=True, type=Path, metavar="DIR", help="adapter folder with its card")
    _common(evaluate)
    evaluate.add_argument(
        "--pubmedqa",
        type=Path,
        metavar="FILE",
        help="score every item of this native PubMedQA file instead of the validation split",
    )
    evaluate.add_argument("--generate", type=int, default=40, help="answers generated per kind (default 40; 0: none)")
    add_max_new_tokens_option(evaluate, default=128, what="generated answer cap (default 128)")
    evaluate.add_argument("--no-closed-form", action="store_true", help="generated answers only")
    add_dtype_option(evaluate, default="float32", what="weights when scoring (default float32)")
    evaluate.add_argument("--no-base", action="store_true", help="score the adapter only, not the base model")
    evaluate.add_argument("--update-card", action="store_true", help="write the results into the training card")
    evaluate.set_defaults(handler=run_finetune_eval_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=DEFAULT_GENERATOR, metavar="MODEL", help="base model (default SmolLM2)")
    add_data_option(parser, "shared data root holding pubmedqa/ and retrieval/ (default ../shared/data)")
    add_index_option(parser, "index over PubMedQA + MedQuAD (built if omitted)")
    add_seed_option(parser, default=13, what="seed of the split, sampling and LoRA init")
    add_threads_option(parser)
    add_no_progress_flag(parser)
    add_json_flag(parser)


def resolve_index(args: argparse.Namespace, data_root: Path) -> Path:
    if args.index is not None:
        return Path(args.index)
    from indexer import build_index  # the CLI composes both packages
    from rag.core.config import IndexSettings, default_cache_dir

    # The corpus files only: a BEIR folder also holds queries.jsonl, which must not become documents.
    sources = [data_root / "retrieval" / name / "corpus.jsonl" for name in ("pubmedqa", "medquad")]
    key = hashlib.sha256(json.dumps(sorted(str(s.resolve()) for s in sources)).encode()).hexdigest()[:16]
    out = default_cache_dir(IndexSettings()) / "finetune-indexes" / key
    print(f"indexing {', '.join(map(str, sources))} into {out} (once; embeddings come from the cache)", file=sys.stderr)
    build_index(sources, out, IndexSettings(), progress=None)
    return out


def run_finetune_command(args: argparse.Namespace) -> int:
    from rag.training.finetune.data import Budgets
    from rag.training.finetune.pipeline import DataPaths, FinetuneRequest, Mix, run_finetune
    from rag.training.finetune.train import LoraParams, TrainConfig

    data_root = args.data or default_data_root()
    config = TrainConfig(
        lora=LoraParams(r=args.rank, alpha=2 * args.rank, layers=args.lora_layers or None),
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        accumulation=args.accumulation,
        label_weight=args.label_weight,
        token_norm=args.token_norm or None,
        balance=args.balance,
        seed=args.seed,
        threads=args.threads,
        bf16=not args.fp32,
    )
    mix = Mix(
        calibration=args.calibration,
        rag_share=args.rag_share,
        conclusion_share=args.conclusion_share,
        medquad=args.medquad,
        abstain=args.abstain,
    )
    request = FinetuneRequest(
        out=args.out,
        data=DataPaths.under(data_root),
        index_dir=resolve_index(args, data_root),
        base=args.base,
        config=config,
        budgets=Budgets(),
        mix=mix,
        progress=not args.no_progress,
        before_metrics=not args.no_before,
    )
    card = run_finetune(request)
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
    else:
        print(f"adapter: {args.out} ({card.adapter['weights_bytes'] / 1e6:.2f} MB weights)")
        print(
            f"training: {card.training['steps']} steps, {card.timings['train_s']:.0f} s; "
            f"total {card.timings['total_s']:.0f} s"
        )
        for when in ("before", "after"):
            for setting, m in card.metrics.get(when, {}).items():
                print(f"{when:<6} {setting:<48} accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}")
    return 0


def run_finetune_eval_command(args: argparse.Namespace) -> int:
    from rag.answering.closed_form import load_pubmedqa
    from rag.answering.prompts import load_template
    from rag.checking.support import SupportChecker
    from rag.core.config import GeneratorSettings
    from rag.models.card import card_biases, read_card, update_card
    from rag.models.generators.local import load_local_generator
    from rag.retrieval.search import Searcher
    from rag.training.finetune.compare import EvalPlan, evaluate_model, table
    from rag.training.finetune.data import Budgets, load_medquad_treatment

    data_root = args.data or default_data_root()
    card = read_card(args.adapter)
    split = card["data"]["split"]
    items = load_pubmedqa(args.pubmedqa or data_root / "pubmedqa" / "pqal_dev.json")
    validation = items if args.pubmedqa else [i for i in items if i.pmid in set(split["validation"])]
    medquad_ids = set(card["data"]["medquad_validation_queries"])
    medquad = [q for q in load_medquad_treatment(data_root / "retrieval" / "medquad") if q.query_id in medquad_ids]
    plan = EvalPlan(
        validation=validation,
        calibration=[
            i for i in load_pubmedqa(data_root / "pubmedqa" / "pqal_dev.json") if i.pmid in set(split["calibration"])
        ],
        medquad=sorted(medquad, key=lambda q: q.query_id),
        generate=args.generate,
        budgets=Budgets(**card["budgets"]),
        max_new_tokens=args.max_new_tokens,
        closed_form=not args.no_closed_form,
    )
    searcher = Searcher.load(resolve_index(args, data_root))
    checker = SupportChecker(searcher.retrievers["dense"].embedder)  # type: ignore[attr-defined]
    templates = (load_template("pubmedqa"), load_template("answer"))
    progress = not args.no_progress
    reports = []
    for adapter in (args.adapter,) if args.no_base else (None, args.adapter):
        generator = load_local_generator(
            GeneratorSettings(
                model=args.base, adapter=str(adapter) if adapter else None, threads=args.threads, dtype=args.dtype
            )
        )
        labels = ("yes", "no", "maybe")
        bias = {s: card_biases(card, f"pubmedqa-{s}", labels) if adapter else None for s in ("gold", "rag")}
        reports.append(evaluate_model(generator, plan, templates, searcher, checker, bias=bias, progress=progress))
    result = {"validation_items": len(validation), "reports": [r.__dict__ for r in reports]}
    if args.update_card and not args.pubmedqa:
        update_card(args.adapter, "validation" if plan.closed_form else "validation-generation", result)
    print(json.dumps(result, indent=2) if args.json else table(reports))
    return 0
