"""How strongly should the reranker lean on the fused order? nDCG@10 per data set for several prior strengths.

    python benchmarks/bench_rerank_blend.py --index DIR --corpus BEIR_DIR [--limit 1000] [--json out.json]
    python benchmarks/bench_rerank_blend.py --index DIR --questions ngc_questions_dev.jsonl [--json out.json]

The packaged reranker orders its pool by `margin + rank_prior * -ln(1 + fused rank)` (rag.retrieval.rerank). This
reads each question's pool once (the model's margins and the fused order), then re-orders it offline with the
prior multiplied by each `--scales` value (0: the model alone; 1: as shipped; larger: closer to the fused order)
and scores nDCG@10 and recall@10 at the document level exactly as `clinrag eval retrieval` does (a chunk stands
for the documents it absorbed), beside the fused order itself. A guideline question set counts its `doc_id` as
the one relevant document. The set's questions are the first `--limit` judged ones (the reported slice for MedQuAD
dev: tune elsewhere with `--offset`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.core.config import RetrievalSettings
from rag.core.types import Evidence
from rag.evaluation.metrics import ndcg_at_k, recall_at_k, unique_groups
from rag.retrieval.rerank import CrossEncoderReranker, load_reranker, ordered_by, passage_text, with_rank_prior
from rag.retrieval.search import Searcher

SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


class CapturingReranker:
    """The packaged reranker, unchanged in what it returns, keeping each pool's margins in fused order."""

    def __init__(self, real: CrossEncoderReranker) -> None:
        self.real = real
        self.pool: list[Evidence] = []
        self.margins: list[float] = []

    def rerank(self, query: str, evidence: list[Evidence]) -> list[Evidence]:
        self.pool = list(evidence)
        self.margins = self.real.margins([(query, passage_text(e)) for e in evidence])
        return blended(self.pool, self.margins, self.real.model.config.rank_prior)


def blended(pool: list[Evidence], margins: list[float], weight: float) -> list[Evidence]:
    return ordered_by(pool, with_rank_prior(margins, weight))


def judged_questions(args: argparse.Namespace) -> list[tuple[str, dict[str, int]]]:
    if args.questions:
        from rag.datasets.guideline_questions import read_guideline_questions

        rows = [(q.text, {q.doc_id: 1}) for q in read_guideline_questions(args.questions)]
    else:
        from rag.datasets.beir import load_qrels, load_queries, resolve_beir

        _, queries_path, qrels_path = resolve_beir([args.corpus], None, None, args.split)
        queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
        rows = [(queries[q], {d: g for d, g in qrels[q].items() if g > 0}) for q in queries if q in qrels]
        rows = [(text, judged) for text, judged in rows if judged]
    return rows[args.offset :][: args.limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, help="BEIR folder (queries.jsonl, qrels/SPLIT.tsv)")
    parser.add_argument("--questions", type=Path, help="guideline questions in the NGC format")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reranker", default="default", help="a folder written by `clinrag train reranker`")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (args.corpus is None) == (args.questions is None):
        parser.error("give --corpus BEIR_DIR or --questions FILE")
    import torch

    torch.set_num_threads(args.threads)
    capture = CapturingReranker(load_reranker(args.reranker))
    settings = RetrievalSettings(collapse_documents=True, depth=300)  # as `clinrag eval retrieval`
    searcher = Searcher.load(args.index, settings=settings, reranker=capture)
    rows = judged_questions(args)
    weight = capture.real.model.config.rank_prior
    names = ["fused", *(f"x{s:g}" for s in args.scales)]
    ndcg: dict[str, list[float]] = {name: [] for name in names}
    recall: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    for text, judged in rows:
        shipped = searcher.search(text, k=100, rerank=True)
        rest = shipped[len(capture.pool) :]
        orders = {"fused": capture.pool + rest}
        for scale in args.scales:
            orders[f"x{scale:g}"] = blended(capture.pool, capture.margins, weight * scale) + rest
        for name, order in orders.items():
            ranked = unique_groups([(e.chunk.doc_id, *e.also_in) for e in order])
            ndcg[name].append(ndcg_at_k(ranked, judged, 10))
            recall[name].append(recall_at_k(ranked, judged, 10))
    result: dict[str, Any] = {
        "index": str(args.index),
        "reranker": args.reranker,
        "set": str(args.questions or args.corpus),
        "questions": len(rows),
        "rank_prior": weight,
        "seconds": round(time.perf_counter() - started, 1),
        "ndcg@10": {name: round(float(np.mean(v)), 4) for name, v in ndcg.items()},
        "recall@10": {name: round(float(np.mean(v)), 4) for name, v in recall.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
