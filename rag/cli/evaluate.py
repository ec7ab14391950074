"""`clinrag eval retrieval`: score bm25, dense and hybrid search on BEIR-format queries and qrels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag.cli.options import (
    add_config_option,
    add_index_option,
    add_json_flag,
    add_limit_option,
    add_reranker_options,
    add_split_option,
    index_for,
)
from rag.core.config import RetrievalSettings, Settings, load_settings
from rag.datasets.beir import load_qrels, load_queries, resolve_beir
from rag.evaluation.retrieval import ModeScores, RetrievalTask, doc_search, evaluate
from rag.retrieval.sharded import open_searcher

MODES = ("bm25", "dense", "hybrid")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("eval", help="evaluate the engine", description="Evaluate the engine.")
    sub = group.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    retrieval = sub.add_parser(
        "retrieval",
        help="nDCG@10, Recall@10/100, MRR@10 on BEIR-format data",
        description="Score search modes on queries with relevance judgments. Without --index, the corpus is "
        "indexed once into the cache and reused on later runs.",
    )
    retrieval.add_argument(
        "--corpus",
        nargs="+",
        required=True,
        type=Path,
        metavar="FILE",
        help="corpus files or a BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)",
    )
    retrieval.add_argument("--queries", type=Path, metavar="FILE", help="BEIR queries.jsonl")
    retrieval.add_argument("--qrels", type=Path, metavar="FILE", help="qrels TSV (query-id, corpus-id, score)")
    add_split_option(retrieval)
    add_index_option(retrieval, "an index of the corpus (built if not given)")
    retrieval.add_argument("--mode", choices=[*MODES, "all"], default="all")
    add_reranker_options(
        retrieval,
        reranker_help="a reranker folder from `clinrag train reranker`",
        rerank_help="also score hybrid search with the top 20 (and each retriever's top 3) reranked "
        "(mode hybrid+rerank) by --reranker",
    )
    retrieval.add_argument(
        "--no-duplicate-credit",
        action="store_true",
        help="score a collapsed duplicate's document as a miss (the figure before duplicates were credited)",
    )
    add_limit_option(retrieval, "only the first N judged queries")
    add_config_option(retrieval)
    add_json_flag(retrieval)
    retrieval.set_defaults(handler=run_retrieval_eval)

    from rag.cli.eval_answers import register as register_answers
    from rag.cli.eval_qa import register as register_qa
    from rag.cli.eval_support import register as register_support

    register_qa(sub)
    register_support(sub)
    register_answers(sub)


def run_retrieval_eval(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else Settings()
    corpus, queries_path, qrels_path = resolve_beir(args.corpus, args.queries, args.qrels, args.split)
    task = RetrievalTask(load_queries(queries_path), load_qrels(qrels_path)).limited(args.limit)
    index_dir = index_for(corpus, args.index, settings)
    retrieval = RetrievalSettings.model_validate(
        {
            **settings.retrieval.model_dump(),
            "collapse_documents": True,
            "depth": max(settings.retrieval.depth, 300),
            **({"reranker": args.reranker} if args.reranker else {}),
            **({"rerank_prior_scale": args.rerank_prior_scale} if args.rerank_prior_scale is not None else {}),
        }
    )
    searcher = open_searcher(index_dir, settings=retrieval)  # a sharded index (--index) is evaluated the same way
    modes = list(MODES) if args.mode == "all" else [args.mode]
    if args.rerank:
        modes.append("hybrid+rerank")
        searcher.reranker  # noqa: B018 (loaded here, so the first query's latency is not the model's load)
    results: list[ModeScores] = []
    for mode in modes:
        searcher.clear_caches()  # each mode pays for its own query embeddings
        results.append(evaluate(task, doc_search(searcher, mode, credit_duplicates=not args.no_duplicate_credit), mode))
    _print(results, index_dir, qrels_path, args.json)
    return 0


def _print(results: list[ModeScores], index_dir: Path, qrels: Path, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {"index": str(index_dir), "qrels": str(qrels), "results": [r.to_json() for r in results]}, indent=2
            )
        )
        return
    print(f"index {index_dir}\nqrels {qrels}")
    print(
        f"{'mode':<8} {'queries':>7} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for r in results:
        print(
            f"{r.mode:<8} {r.queries:>7} {r.ndcg_at_10:>8.4f} {r.recall_at_10:>7.4f} {r.recall_at_100:>7.4f} "
            f"{r.mrr_at_10:>7.4f} {r.latency_ms_p50:>7.1f} {r.latency_ms_p95:>7.1f}"
        )
