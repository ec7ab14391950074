"""Choose retrieval defaults by measurement: BM25 tokenizer options, RRF k, fusion weights and method.

Runs each retriever once per query and re-fuses in memory, so a grid costs seconds. Tunes on a slice of the
dev queries that is disjoint from the slice the benchmarks report (`--offset`), so a default is not fitted to
the figure it is judged by.

    python benchmarks/tune_retrieval.py --index DIR --dataset medquad --offset 1000 --limit 2000
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "retrieval"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="a bundle built from the dataset's corpus")
    parser.add_argument("--dataset", choices=["medquad", "pubmedqa"], default="medquad")
    parser.add_argument("--offset", type=int, default=1000, help="skip the first N judged queries (reported slice)")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=100)
    args = parser.parse_args()

    from rag.core.config import BM25Settings
    from rag.datasets.beir import load_qrels, load_queries
    from rag.evaluation.metrics import ndcg_at_k, recall_at_k, unique_in_order
    from rag.index.sparse import BM25Index, TermCounts
    from rag.retrieval.fusion import convex_combination, reciprocal_rank_fusion
    from rag.retrieval.search import Searcher
    from rag.text.tokenize import ClinicalTokenizer, TokenizerConfig

    folder = DATA / args.dataset
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / "dev.tsv")
    ids = [q for q in queries if q in qrels][args.offset : args.offset + args.limit]
    searcher = Searcher.load(args.index)
    chunks = searcher.chunks
    doc_of = [c.doc_id for c in chunks]

    dense_runs = {}
    for qid in ids:
        dense_runs[qid] = searcher.retrievers["dense"].retrieve(queries[qid], args.depth)
    print(f"{len(ids)} queries from offset {args.offset}; dense runs done", file=sys.stderr)

    results: list[tuple[str, float, float]] = []
    texts = [c.indexed_text for c in chunks]
    for stem, stop in itertools.product([True, False], [True, False]):
        tokenizer = ClinicalTokenizer(TokenizerConfig(stem=stem, stopwords=stop))
        index = BM25Index(TermCounts.from_tokens(tokenizer.tokenize_many(texts)), BM25Settings())
        bm25_runs = {qid: index.top_k(tokenizer.tokenize(queries[qid]), args.depth) for qid in ids}
        tag = f"stem={stem} stop={stop}"
        variants: dict[str, dict[str, list[tuple[int, float]]]] = {"bm25": bm25_runs}
        if stem and stop:
            variants["dense"] = dense_runs
        for k in (10, 30, 60, 100):
            for w in (0.5, 1.0, 2.0):
                variants[f"rrf k={k} w_dense={w}"] = {
                    q: [
                        (f.key, f.score)
                        for f in reciprocal_rank_fusion(
                            {"bm25": bm25_runs[q], "dense": dense_runs[q]}, k=k, weights={"bm25": 1.0, "dense": w}
                        )
                    ]
                    for q in ids
                }
        for alpha in (0.3, 0.5, 0.7):
            variants[f"convex dense={alpha}"] = {
                q: [
                    (f.key, f.score)
                    for f in convex_combination(
                        {"bm25": bm25_runs[q], "dense": dense_runs[q]}, {"bm25": 1 - alpha, "dense": alpha}
                    )
                ]
                for q in ids
            }
        for name, runs in variants.items():
            n10, r10 = [], []
            for qid in ids:
                docs = unique_in_order([doc_of[row] for row, _ in runs[qid]])
                n10.append(ndcg_at_k(docs, qrels[qid], 10))
                r10.append(recall_at_k(docs, qrels[qid], 10))
            results.append((f"{tag:<22} {name}", sum(n10) / len(n10), sum(r10) / len(r10)))
    results.sort(key=lambda r: -r[1])
    print(f"{'variant':<50} {'nDCG@10':>8} {'R@10':>7}")
    for name, n10, r10 in results:
        print(f"{name:<50} {n10:>8.4f} {r10:>7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
