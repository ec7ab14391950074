"""Retrieval against peers on the same corpus with the same embedder, one run.

clinrag bm25 / dense / hybrid versus LangChain's EnsembleRetriever (BM25Retriever on rank-bm25 with its
whitespace tokenizer + a FAISS vector store over the same MiniLM, default equal weights, chunks from a
1000/200 character splitter) and rank-bm25 alone (query throughput). Prints nDCG@10, Recall@10, Recall@100,
MRR@10, query latency p50/p95, index build time and peak memory.

    pip install -e '.[bench]'
    python benchmarks/bench_retrieval.py --dataset medquad --limit 1000 [--skip-langchain] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "retrieval"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_clinrag(corpus: Path, task: Any, cache: Path, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from indexer import build_index
    from rag.core.config import IndexSettings, RetrievalSettings
    from rag.evaluation.retrieval import evaluate
    from rag.retrieval.search import Searcher

    started = time.perf_counter()
    report = build_index([corpus], out, IndexSettings.model_validate({"cache_dir": str(cache)}))
    build_s = time.perf_counter() - started
    searcher = Searcher.load(out, settings=RetrievalSettings(collapse_documents=True, depth=300))
    rows = []
    for mode in ("bm25", "dense", "hybrid"):

        def search(query: str, k: int, mode: str = mode) -> list[str]:
            return [e.chunk.doc_id for e in searcher.search(query, k=k, mode=mode)]  # type: ignore[arg-type]

        searcher.search("warm-up query", k=10, mode=mode)  # loads the model outside the timings
        searcher.clear_caches()  # each mode pays for its own query embeddings
        rows.append({"system": f"clinrag {mode}", **evaluate(task, search, mode).to_json()})
    info = {
        "chunks": report.searchable_chunks,
        "build_s": round(build_s, 1),
        "embedded": report.vectors_embedded,
        "peak_rss_mb": round(peak_rss_mb()),
    }
    return rows, info


def run_rank_bm25_throughput(out: Path, task: Any, n_queries: int = 50) -> dict[str, Any]:
    """Queries per second of rank-bm25 versus clinrag's sparse BM25 on the same chunks and tokens."""
    import numpy as np
    from rank_bm25 import BM25Okapi

    from rag.retrieval.search import Searcher

    searcher = Searcher.load(out)
    bm25 = searcher.retrievers["bm25"]
    tokenizer = bm25.tokenizer  # type: ignore[attr-defined]
    texts = [c.indexed_text for c in searcher.chunks]
    started = time.perf_counter()
    reference = BM25Okapi([tokenizer.tokenize(t) for t in texts])
    ref_build = time.perf_counter() - started
    queries = [tokenizer.tokenize(q) for q in list(task.queries.values())[:n_queries]]
    started = time.perf_counter()
    for q in queries:
        np.argsort(-reference.get_scores(q))[:10]
    ref_qps = len(queries) / (time.perf_counter() - started)
    many = [tokenizer.tokenize(q) for q in task.queries.values()]
    started = time.perf_counter()
    for q in many:
        bm25.index.top_k(q, 10)  # type: ignore[attr-defined]
    ours_qps = len(many) / (time.perf_counter() - started)
    return {
        "rank_bm25_qps": round(ref_qps, 1),
        "rank_bm25_build_s": round(ref_build, 1),
        "clinrag_bm25_qps": round(ours_qps, 1),
        "speedup": round(ours_qps / ref_qps, 1),
    }


def run_langchain(corpus: Path, task: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.core.config import EmbedderSettings
    from rag.evaluation.retrieval import evaluate
    from rag.models.embed import load_embedder

    model = load_embedder(EmbedderSettings()).model

    class MiniLM(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts, batch_size=64, normalize_embeddings=True).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return model.encode([text], normalize_embeddings=True)[0].tolist()  # type: ignore[no-any-return]

    docs = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        docs.append(Document(page_content=f"{row['title']}\n{row['text']}".strip(), metadata={"id": row["_id"]}))
    started = time.perf_counter()
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    sparse = BM25Retriever.from_documents(chunks, k=100)
    dense = FAISS.from_documents(chunks, MiniLM()).as_retriever(search_kwargs={"k": 100})
    ensemble = EnsembleRetriever(retrievers=[sparse, dense], weights=[0.5, 0.5])  # the default weights
    build_s = time.perf_counter() - started

    def search(query: str, k: int) -> list[str]:
        return [d.metadata["id"] for d in ensemble.invoke(query)][:k]

    row = {"system": "langchain ensemble", **evaluate(task, search, "ensemble").to_json()}
    return row, {"chunks": len(chunks), "build_s": round(build_s, 1), "peak_rss_mb": round(peak_rss_mb())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["medquad", "pubmedqa"], default="medquad")
    parser.add_argument("--limit", type=int, default=1000, help="first N dev queries (0 = all)")
    parser.add_argument("--workdir", type=Path, help="keep the index and embedding cache here (default: temporary)")
    parser.add_argument("--skip-langchain", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from rag.datasets.beir import load_qrels, load_queries
    from rag.evaluation.retrieval import RetrievalTask

    folder = DATA / args.dataset
    task = RetrievalTask(load_queries(folder / "queries.jsonl"), load_qrels(folder / "qrels" / "dev.tsv"))
    task = task.limited(args.limit or None)
    random.seed(0)
    with tempfile.TemporaryDirectory(prefix="clinrag-bench-") as tmp:
        work = args.workdir or Path(tmp)
        out = work / f"index-{args.dataset}"
        rows, ours = run_clinrag(folder / "corpus.jsonl", task, work / "cache", out)
        throughput = run_rank_bm25_throughput(out, task)
    figures: dict[str, Any] = {
        "dataset": args.dataset,
        "queries": len(task.queries),
        "clinrag_index": ours,
        "bm25_throughput": throughput,
    }
    if not args.skip_langchain:
        row, info = run_langchain(folder / "corpus.jsonl", task)
        rows.append(row)
        figures["langchain_index"] = info
    figures["results"] = rows
    print(f"{args.dataset}: {len(task.queries)} dev queries")
    print(f"{'system':<20} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for r in rows:
        print(
            f"{r['system']:<20} {r['ndcg@10']:>8.4f} {r['recall@10']:>7.4f} {r['recall@100']:>7.4f} "
            f"{r['mrr@10']:>7.4f} {r['latency_ms']['p50']:>7.1f} {r['latency_ms']['p95']:>7.1f}"
        )
    print(json.dumps({k: v for k, v in figures.items() if k != "results"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
