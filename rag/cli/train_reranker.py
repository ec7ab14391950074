"""`clinrag train reranker`: fine-tune the MiniLM cross-encoder reranker on MedQuAD with mined hard negatives."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.cli.options import add_index_option, add_out_option
from rag.training.crossencoder import add_training_arguments

if TYPE_CHECKING:
    from rag.datasets.beir import Qrels
    from rag.models.card import TrainingCard
    from rag.models.crossencoder import CrossEncoder
    from rag.retrieval.search import Searcher
    from rag.training.crossencoder import TrainConfig, TrainResult
    from rag.training.listwise import RankGroup
    from rag.training.reranker import RerankQuery


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
    add_out_option(parser, "folder for the model and its card")
    parser.add_argument(
        "--corpus", type=Path, metavar="DIR", help="BEIR folder (default ../shared/data/retrieval/medquad)"
    )
    add_index_option(parser, "an index of that corpus (built if not given)")
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
    parser.add_argument(
        "--also",
        nargs=2,
        action="append",
        default=[],
        metavar=("QUESTIONS", "INDEX"),
        help="train also on a judged question set (JSONL with text, doc_id and optional evidence, e.g. from "
        "`clinrag train questions`; or a BEIR folder) searched in its own index; repeat for more sets",
    )
    parser.add_argument(
        "--exclude-docs",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="question JSONL whose doc_ids are never shown in training, as positive or negative (e.g. the NGC dev "
        "questions, which measure unseen guidelines); repeat",
    )
    parser.add_argument("--no-sentences", action="store_true", help="no heading + sentence groups")
    parser.add_argument("--no-prior", action="store_true", help="no learnt fused-rank prior: the model alone ranks")
    parser.add_argument(
        "--max-length", type=int, default=128, help="tokens of question + passage read (default 128: latency)"
    )
    parser.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="pair representation (default cls)")
    add_training_arguments(parser, epochs=1.0, time_limit_min=40.0, lr=5e-4, batch_size=4, unit="questions")
    parser.set_defaults(handler=run_train_reranker)


@dataclass(frozen=True)
class RerankerData:
    """The BEIR folder read once: its files, the judged questions split for training and validation, their index."""

    beir: Path
    corpus: list[Path]
    queries_path: Path
    qrels_path: Path
    qrels: Qrels
    train_queries: list[RerankQuery]
    held_out: list[RerankQuery]
    index_dir: Path


def run_train_reranker(args: argparse.Namespace) -> int:
    import torch

    from rag.core.config import RetrievalSettings
    from rag.retrieval.search import Searcher

    _check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = _load_data(args)
    searcher = Searcher.load(data.index_dir, settings=RetrievalSettings(collapse_documents=False))
    groups, mined = _mine_groups(args, searcher, data)
    model, config, result = _train(args, groups)
    metrics = _validation_metrics(args, model, searcher, data) if data.held_out else {}
    card = _training_card(args, data, mined, model, config, result, metrics, started)
    card.write(args.out)
    _print_summary(args, card, metrics, result)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    from rag.core.errors import ConfigError

    if args.epochs <= 0 or args.batch_size < 1 or args.lr <= 0 or args.negatives < 1 or args.queries < 1:
        raise ConfigError("--epochs, --lr, --negatives and --queries must be > 0 and --batch-size >= 1")
    # Checked before an hour of mining and training, not after.
    for questions, index in args.also:
        if not Path(questions).exists():
            raise ConfigError(f"{questions}: no such question set; give a JSONL file or a BEIR folder to --also")
        if not (Path(index) / "manifest.json").exists():
            raise ConfigError(f"{index}: not an index; build one with `clinrag index build SOURCES --out {index}`")
    for path in args.exclude_docs:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such file; --exclude-docs takes a question JSONL")


def _load_data(args: argparse.Namespace) -> RerankerData:
    """The BEIR folder's judged questions, split (--offset, --queries, --validation), and an index of its corpus."""
    from rag.cli.options import default_data_root, index_for
    from rag.core.config import Settings
    from rag.datasets.beir import load_qrels, resolve_beir
    from rag.training.reranker import read_typed_queries, split_queries

    beir = args.corpus or default_data_root() / "retrieval" / "medquad"
    corpus, queries_path, qrels_path = resolve_beir([beir], None, None, "dev")
    queries, qrels = read_typed_queries(queries_path), load_qrels(qrels_path)
    train_queries, held_out = split_queries(
        queries, qrels, offset=args.offset, limit=args.queries, validation=args.validation
    )
    index_dir = index_for(corpus, args.index, Settings(), progress=not args.quiet)
    return RerankerData(beir, corpus, queries_path, qrels_path, qrels, train_queries, held_out, index_dir)


def _mine_groups(
    args: argparse.Namespace, searcher: Searcher, data: RerankerData
) -> tuple[list[RankGroup], dict[str, Any]]:
    """Each training question's group (its judged passage and mined hard negatives), and what the mining did."""
    from rag.training.reranker import mine_groups

    groups, mined = mine_groups(
        searcher,
        data.train_queries,
        data.qrels,
        negatives=args.negatives,
        seed=args.seed,
        paraphrase_share=args.paraphrase_share,
        heading_dropout=args.heading_dropout,
        sentences=not args.no_sentences,
        progress=not args.quiet,
    )
    also = _mine_other_sets(args)
    for extra, _ in also.values():
        groups.extend(extra)
    return groups, {**mined, "also": {name: stats for name, (_, stats) in also.items()}} if also else mined


def _mine_other_sets(args: argparse.Namespace) -> dict[str, tuple[list[RankGroup], dict[str, Any]]]:
    """The groups of each --also set, mined in its own index; no document of --exclude-docs is ever shown."""
    from rag.core.config import RetrievalSettings
    from rag.core.files import file_sha256
    from rag.retrieval.search import Searcher
    from rag.training.judged_sets import mine_judged_groups, read_judged_questions
    from rag.training.synthetic_questions import excluded_documents

    exclude = excluded_documents(args.exclude_docs)
    out: dict[str, tuple[list[RankGroup], dict[str, Any]]] = {}
    for questions_path, index in args.also:
        path = Path(questions_path)
        questions = read_judged_questions(path)
        searcher = Searcher.load(Path(index), settings=RetrievalSettings(collapse_documents=False))
        groups, stats = mine_judged_groups(
            searcher,
            questions,
            negatives=args.negatives,
            seed=args.seed,
            heading_dropout=args.heading_dropout,
            sentences=not args.no_sentences,
            exclude=exclude,
            progress=not args.quiet,
        )
        sha = file_sha256(path) if path.is_file() else "BEIR folder"
        out[str(path)] = (groups, {**stats, "index": str(index), "sha256": sha, "questions_read": len(questions)})
    return out


def _train(args: argparse.Namespace, groups: list[RankGroup]) -> tuple[CrossEncoder, TrainConfig, TrainResult]:
    """A new cross-encoder trained with the listwise loss on `groups`, saved into --out."""
    from rag.models.crossencoder import CrossEncoder, CrossEncoderConfig
    from rag.retrieval.rerank import RELEVANCE_LABELS
    from rag.training.crossencoder import TrainConfig
    from rag.training.listwise import train_listwise

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
    return model, config, result


def _validation_metrics(
    args: argparse.Namespace, model: CrossEncoder, searcher: Searcher, data: RerankerData
) -> dict[str, Any]:
    """Hybrid vs reranked nDCG@10 (and the rest) on the held-out questions; without the learnt prior too."""
    from rag.core.config import RetrievalSettings
    from rag.evaluation.retrieval import RetrievalTask, doc_search, evaluate
    from rag.retrieval.rerank import CrossEncoderReranker
    from rag.retrieval.search import Searcher

    # The mining searcher's bundle and embedder, read once, with the evaluation's settings and the new model.
    eval_searcher = Searcher(
        searcher.bundle,
        searcher.query_embedder,
        RetrievalSettings(collapse_documents=True, depth=300),
        CrossEncoderReranker(model, name=f"cross-encoder:{args.out.name}"),
    )
    held_out = data.held_out
    task = RetrievalTask({q.query_id: q.text for q in held_out}, {q.query_id: data.qrels[q.query_id] for q in held_out})
    metrics: dict[str, Any] = {}
    for mode in ("hybrid", "hybrid+rerank"):
        metrics[mode] = evaluate(task, doc_search(eval_searcher, mode), mode).to_json()
    if model.config.rank_prior:
        # What the model alone does: the same run without its learnt prior.
        learnt, model.config = model.config, replace(model.config, rank_prior=0.0)
        metrics["rerank-without-prior"] = evaluate(
            task, doc_search(eval_searcher, "hybrid+rerank"), "hybrid+rerank"
        ).to_json()
        model.config = learnt
    return metrics


def _training_card(
    args: argparse.Namespace,
    data: RerankerData,
    mined: dict[str, Any],
    model: CrossEncoder,
    config: TrainConfig,
    result: TrainResult,
    metrics: dict[str, Any],
    started: float,
) -> TrainingCard:
    from rag.models.card import TrainingCard
    from rag.training.reranker import MINING_DEPTH

    weights = args.out / "weights.safetensors"
    return TrainingCard(
        base_model=args.base,
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
                "also": [{"questions": q, "index": i} for q, i in args.also],
                "excluded_documents_from": [str(p) for p in args.exclude_docs],
            },
        },
        budgets={"time_limit_minutes": args.time_limit, "artefact_limit_mb": 10},
        data=_data_summary(args, data, mined),
        timings={"train_s": round(result.seconds, 1), "total_s": round(time.perf_counter() - started, 1)},
        metrics={"validation": metrics},
        adapter={"weights_bytes": weights.stat().st_size, "where": "CPU (this machine); no GPU was used"},
        training={
            "steps": result.steps,
            "loss_every_25_steps": [round(x, 4) for x in result.losses],
            "stopped_early": result.stopped_early,
        },
    )


def _data_summary(args: argparse.Namespace, data: RerankerData, mined: dict[str, Any]) -> dict[str, Any]:
    """The card's data section: the files' hashes, the index, which questions trained and what mining found."""
    from rag.training.reranker import data_files

    return {
        "files_sha256": data_files(data.beir, data.corpus[0], data.queries_path, data.qrels_path),
        "index": str(data.index_dir),
        "judged_queries_skipped": args.offset,
        "train_queries": {
            "count": len(data.train_queries),
            "first": data.train_queries[0].query_id,
            "last": data.train_queries[-1].query_id,
        },
        "validation_queries": {"count": len(data.held_out), "rule": "the last N judged queries of the file"},
        "mined": mined,
    }


def _print_summary(args: argparse.Namespace, card: TrainingCard, metrics: dict[str, Any], result: TrainResult) -> None:
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
        return
    for mode, row in metrics.items():
        print(f"validation {mode:<14} nDCG@10 {row['ndcg@10']:.4f}  R@10 {row['recall@10']:.4f}  "
              f"MRR@10 {row['mrr@10']:.4f}  p50 {row['latency_ms']['p50']:.0f} ms")  # fmt: skip
    weights = args.out / "weights.safetensors"
    print(
        f"model: {args.out} ({weights.stat().st_size / 1e6:.2f} MB weights); {result.steps} steps, "
        f"training {result.seconds:.0f} s, total {card.timings['total_s']:.0f} s"
    )
