"""Reranking latency: `search` with and without the reranker, on the same questions, one at a time.

    python benchmarks/bench_rerank.py --index DIR [--corpus ../shared/data/retrieval/medquad] [--queries 100]
        [--offset 0] [--depth 20] [--threads 2] [--reranker DIR] [--json out.json]

Questions are the first N judged dev queries of the BEIR folder (the reported ones: latency only, no scores).
Each question is searched once without reranking (warm query cache excluded: the cache is cleared first) and once
with the top `--depth` reranked; prints p50/p95 milliseconds of the plain search (cold query cache) and of the
time reranking adds (a reranked search minus the same search without reranking, both with the vector cached).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "retrieval" / "medquad")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--reranker", default="default")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from rag.core.config import RetrievalSettings
    from rag.datasets.beir import load_queries
    from rag.retrieval.search import Searcher

    if args.threads:
        torch.set_num_threads(args.threads)
    questions = list(load_queries(args.corpus / "queries.jsonl").values())[args.offset : args.offset + args.queries]
    settings = RetrievalSettings(rerank_depth=args.depth, reranker=args.reranker)
    searcher = Searcher.load(args.index, settings=settings)
    searcher.search(questions[0], k=args.k, rerank=True)  # loads the embedder and the reranker
    plain, added = [], []
    for question in questions:
        searcher.clear_caches()
        started = time.perf_counter()
        searcher.search(question, k=args.k)  # from a cold query cache, as a new question is
        plain.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        searcher.search(question, k=args.k)  # the query vector is cached now: retrieval and fusion only
        warm = time.perf_counter() - started
        started = time.perf_counter()
        searcher.search(question, k=args.k, rerank=True)
        added.append((time.perf_counter() - started - warm) * 1000)
    result = {
        "queries": len(questions),
        "rerank_depth": args.depth,
        "threads": torch.get_num_threads(),
        "search_ms": percentiles(plain),
        "rerank_added_ms": percentiles(added),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}


if __name__ == "__main__":
    sys.exit(main())
