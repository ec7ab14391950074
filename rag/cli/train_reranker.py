"""`clinrag train reranker`: fine-tune the MiniLM cross-encoder reranker on MedQuAD with mined hard negatives."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rag.training.crossencoder import add_training_arguments


def register_reranker(sub: Any) -> None:
    parser = sub.add_parser(
        "reranker",
        help="the cross-encoder reranker (question, passage) -> relevant / not",
        description="Fine-tune a MiniLM cross-encoder (LoRA + a 2-way head) on the judged dev questions of a BEIR "
        "folder (MedQuAD by default), skipping the first --offset (the reported ones) and holding out the last "
        "--validation, with hard negatives mined by the hybrid retriever and a listwise loss (each judged passage "
        "against its own question's negatives, plus a learnt fused-rank prior). Writes the artefact and "
        "training_card.json (with reranked vs hybrid nDCG@10 on the held-out questions) into --out.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the model and its card")
    parser.add_argument(
        "--corpus", type=Path, metavar="DIR", help="BEIR folder (default ../shared/data/retrieval/medquad)"
    )
    parser.add_argument("--index", type=Path, metavar="DIR", help="an index of that corpus (built if not given)")
    parser.add_argument("--offset", type=int, default=1000, help="judged queries never used (default 1000)")
    parser.add_argument("--queries", type=int, default=6000, metavar="N", help="training questions (default 6000)")
    parser.add_argument("--validation", type=int, default=300, metavar="N", help="held-out questions (default 300)")
    parser.add_argument("--negatives", type=int, default=7, help="hard negatives per question (default 7)")
    parser.add_argument(
        "--paraphrase-share", type=float, default=0.4, help="share of questions in consumer phrasing (default 0.4)"
    )
    parser.add_argument(
        "--heading-dropout", type=float, default=0.3, help="share of passages shown without headings (default 0.3)"
    )
    parser.add_argument("--no-sentences", action="store_true", help="no heading + sentence groups")
    parser.add_argument("--no-prior", action="store_true", help="no learnt fused-rank prior: the model alone ranks")
    parser.add_argument(
        "--max-length", type=int, default=128, help="tokens of question + passage read (default 128: latency)"
    )
    parser.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="pair representation (default cls)")
    add_training_arguments(parser, epochs=1.0, time_limit_min=40.0, lr=5e-4, batch_size=4, unit="questions")
    parser.set_defaults(handler=run_train_reranker)


def run_train_reranker(args: argparse.Namespace) -> int:
    import torch

    from rag.cli.options import default_data_root, index_for
    from rag.core.config import RetrievalSettings, Settings
    from rag.core.errors import ConfigError
    from rag.datasets.beir import load_qrels, resolve_beir
    from rag.evaluation.retrieval import RetrievalTask, doc_search, evaluate
    from rag.models.card import TrainingCard
    from rag.models.crossencoder import CrossEncoder, CrossEncoderConfig
    from rag.retrieval.rerank import RELEVANCE_LABELS, CrossEncoderReranker
    from rag.retrieval.search import DenseRetriever, Searcher
    from rag.training.crossencoder import TrainConfig
    from rag.training.listwise import train_listwise
    from rag.training.reranker import MINING_DEPTH, data_files, mine_groups, read_typed_queries, split_queries

    if args.epochs <= 0 or args.batch_size < 1 or args.lr <= 0 or args.negatives < 1 or args.queries < 1:
        raise ConfigError("--epochs, --lr, --negatives and --queries must be > 0 and --batch-size >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    beir = args.corpus or default_data_root() / "retrieval" / "medquad"
    corpus, queries_path, qrels_path = resolve_beir([beir], None, None, "dev")
    queries, qrels = read_typed_queries(queries_path), load_qrels(qrels_path)
    train_queries, held_out = split_queries(
        queries, qrels, offset=args.offset, limit=args.queries, validation=args.validation
    )
    index_dir = index_for(corpus, args.index, Settings(), progress=not args.quiet)
    searcher = Searcher.load(index_dir, settings=RetrievalSettings(collapse_documents=False))
    groups, mined = mine_groups(
        searcher,
        train_queries,
        qrels,
        negatives=args.negatives,
        seed=args.seed,
        paraphrase_share=args.paraphrase_share,
        heading_dropout=args.heading_dropout,
        sentences=not args.no_sentences,
        progress=not args.quiet,
    )
    config = TrainConfig.from_arguments(args)
    model_config = CrossEncoderConfig(
        labels=RELEVANCE_LABELS,
        base_model=args.base,
        lora_rank=args.rank,
        lora_alpha=2 * args.rank,
        max_length=args.max_length,
        pooling=args.pooling,
    )
    model = CrossEncoder.new(model_config, seed=args.seed, allow_download=args.allow_download)
    result = train_listwise(model, groups, config, learn_prior=not args.no_prior, progress=not args.quiet)
    model.save(args.out)
    metrics: dict[str, Any] = {}
    if held_out:
        # The mining searcher's bundle and embedder, read once, with the evaluation's settings and the new model.
        dense = searcher.retrievers["dense"]
        assert isinstance(dense, DenseRetriever)
        eval_searcher = Searcher(
            searcher.bundle,
            dense.embedder,
            RetrievalSettings(collapse_documents=True, depth=300),
            CrossEncoderReranker(model, name=f"cross-encoder:{args.out.name}"),
        )
        task = RetrievalTask({q.query_id: q.text for q in held_out}, {q.query_id: qrels[q.query_id] for q in held_out})
        for mode in ("hybrid", "hybrid+rerank"):
            metrics[mode] = evaluate(task, doc_search(eval_searcher, mode), mode).to_json()
        if model.config.rank_prior:
            # What the model alone does: the same run without its learnt prior.
            learnt, model.config = model.config, replace(model.config, rank_prior=0.0)
            metrics["rerank-without-prior"] = evaluate(
                task, doc_search(eval_searcher, "hybrid+rerank"), "hybrid+rerank"
            ).to_json()
            model.config = learnt
    weights = args.out / "weights.safetensors"
    card = TrainingCard(
        base_model=model_config.base_model,
        seed=args.seed,
        config={
            "train": config.to_json(),
            "model": model.config.to_json(),
            "loss": "listwise: softmax over each question's group (judged passage vs its negatives)",
            "input": "[CLS] question [SEP] heading path + passage (or heading: sentence)",
            "mining": {
                "depth": MINING_DEPTH,
                "negatives": args.negatives,
                "paraphrase_share": args.paraphrase_share,
                "heading_dropout": args.heading_dropout,
                "sentence_groups": not args.no_sentences,
            },
        },
        budgets={"time_limit_minutes": args.time_limit, "artefact_limit_mb": 10},
        data={
            "files_sha256": data_files(beir, corpus[0], queries_path, qrels_path),
            "index": str(index_dir),
            "judged_queries_skipped": args.offset,
            "train_queries": {
                "count": len(train_queries),
                "first": train_queries[0].query_id,
                "last": train_queries[-1].query_id,
            },
            "validation_queries": {"count": len(held_out), "rule": "the last N judged queries of the file"},
            "mined": mined,
        },
        timings={"train_s": round(result.seconds, 1), "total_s": round(time.perf_counter() - started, 1)},
        metrics={"validation": metrics},
        adapter={"weights_bytes": weights.stat().st_size, "where": "CPU (this machine); no GPU was used"},
        training={
            "steps": result.steps,
            "loss_every_25_steps": [round(x, 4) for x in result.losses],
            "stopped_early": result.stopped_early,
        },
    )
    card.write(args.out)
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
    else:
        for mode, row in metrics.items():
            print(f"validation {mode:<14} nDCG@10 {row['ndcg@10']:.4f}  R@10 {row['recall@10']:.4f}  "
                  f"MRR@10 {row['mrr@10']:.4f}  p50 {row['latency_ms']['p50']:.0f} ms")  # fmt: skip
        print(
            f"model: {args.out} ({weights.stat().st_size / 1e6:.2f} MB weights); {result.steps} steps, "
            f"training {result.seconds:.0f} s, total {card.timings['total_s']:.0f} s"
        )
    return 0
