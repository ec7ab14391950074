"""Sharded indexes: same results as one bundle, build throughput on Ray workers, search at 4 x 1M chunks.

# every MedQuAD dev query: top-10 of a 4-shard index vs the single bundle (real MiniLM; the cache makes the
# second build cheap once the first has embedded the corpus)
python benchmarks/bench_shards.py equivalence --single DIR1 --sharded DIR2 --shards 4

# build throughput with 1 and 2 Ray workers (and in one process), same corpus, empty embedding cache each time
python benchmarks/bench_shards.py throughput --docs 1500 --workers 1 2 --workdir DIR

# 4 shards x 1M synthetic chunks (bench_scale.py's generator), IVF-PQ re-scored exactly, measured in a fresh
# process: hybrid p50/p95, recall@10 of exact over all 4M vectors, resident memory per chunk
python benchmarks/bench_shards.py scale --shards 4 --size 1000000 --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDQUAD = ROOT.parent / "shared" / "data" / "retrieval" / "medquad"


def dev_queries(limit: int | None) -> list[str]:
    judged = {line.split("\t")[0] for line in (MEDQUAD / "qrels" / "dev.tsv").read_text().splitlines()[1:]}
    out = []
    with (MEDQUAD / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in judged:
                out.append(row["text"])
    return out[:limit] if limit else out


class _OncePerQuery:
    """The bundle's embedder, each query embedded once for both searchers (the comparison is of search, not of
    two identical forward passes)."""

    def __init__(self, embedder: Any) -> None:
        self._real, self._seen = embedder, {}

    @property
    def name(self) -> str:
        return str(self._real.name)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        for text in texts:
            if text not in self._seen:
                self._seen[text] = self._real.embed([text])[0]
        return np.stack([self._seen[t] for t in texts])


def equivalence(args: argparse.Namespace) -> dict[str, Any]:
    from indexer.build import build_index
    from indexer.sharded import build_sharded_index
    from rag.retrieval.search import Searcher
    from rag.retrieval.sharded import ShardedSearcher

    timings = {}
    t0 = time.perf_counter()
    build_index([MEDQUAD / "corpus.jsonl"], args.single, progress=True)
    timings["single_build_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    build_sharded_index([MEDQUAD / "corpus.jsonl"], args.sharded, args.shards, progress=True)
    timings["sharded_build_s"] = round(time.perf_counter() - t0, 1)
    embedder = _OncePerQuery(Searcher.load(args.single).retrievers["dense"].embedder)  # type: ignore[attr-defined]
    single = Searcher.load(args.single, embedder)  # type: ignore[arg-type]
    sharded = ShardedSearcher.load(args.sharded, embedder)  # type: ignore[arg-type]
    queries = dev_queries(args.limit)
    result: dict[str, Any] = {"queries": len(queries), "shards": args.shards, **timings}
    for mode in args.modes:
        same, examples = 0, []
        for query in queries:
            a = [(e.chunk.chunk_id, e.score, e.also_in) for e in single.search(query, k=10, mode=mode)]
            b = [(e.chunk.chunk_id, e.score, e.also_in) for e in sharded.search(query, k=10, mode=mode)]
            same += a == b  # the same chunks, in the same order, with bit-identical scores and absorbed documents
            if a != b and len(examples) < 3:
                examples.append(query)
        result[mode] = {"identical_top10": same, "different": len(queries) - same, "examples": examples}
        print(json.dumps({mode: result[mode]}), file=sys.stderr, flush=True)
    return result


def write_subset(docs: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "corpus.jsonl"
    with (MEDQUAD / "corpus.jsonl").open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= docs:
                break
            dst.write(line)
    return target


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from indexer.sharded import build_sharded_index
    from rag.core.config import IndexSettings

    corpus = write_subset(args.docs, args.workdir / "corpus")
    runs = []
    for workers in [0, *args.workers]:  # 0: in this process, torch on every core
        cache = Path(tempfile.mkdtemp(dir=args.workdir, prefix=f"cache-{workers}-"))
        settings = IndexSettings(cache_dir=str(cache), progress=False)
        out = args.workdir / f"index-{workers}"
        address = f"local:{workers}" if workers else None
        t0 = time.perf_counter()
        report = build_sharded_index([corpus], out, args.shards, settings, ray_address=address)
        seconds = time.perf_counter() - t0
        if ray.is_initialized():
            ray.shutdown()
        row = {"workers": workers or "in-process", "chunks": report.searchable_chunks,
               "embedded": report.vectors_embedded, "seconds": round(seconds, 1),
               "chunks_per_s": round(report.searchable_chunks / seconds, 2),
               "timings": report.to_json()["timings"]}  # fmt: skip
        runs.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    by_workers = {r["workers"]: r["chunks_per_s"] for r in runs}
    speedup = by_workers.get(2, 0) / by_workers[1] if 1 in by_workers else None
    return {"docs": args.docs, "shards": args.shards, "runs": runs, "speedup_2_vs_1": speedup and round(speedup, 2)}


def build_scale(args: argparse.Namespace) -> Path:
    """Shards from bench_scale's generator (distinct ids per shard), committed as one sharded index."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scale import build_bundle

    from rag.core.config import DenseIndexSettings, IndexSettings
    from rag.index.shards import SHARDED_MANIFEST, commit_sharded, shard_name
    from rag.index.sparse import CorpusStats, TermCounts

    out = args.workdir / f"sharded-{args.shards}x{args.size}-{args.kind}"
    if (out / SHARDED_MANIFEST).is_file():
        return out
    folder = out / "g1"
    builds = []
    for i in range(args.shards):
        shard = folder / shard_name(i)
        if not (shard / "manifest.json").is_file():  # a killed run resumes at the first unfinished shard
            print(f"building shard {i}: {args.size:,} synthetic chunks", file=sys.stderr, flush=True)
            builds.append(build_bundle(args.size, shard, args.kind, seed=i, prefix=f"s{i}"))
            print(json.dumps(builds[-1]), file=sys.stderr, flush=True)
    shards = [folder / shard_name(i) for i in range(args.shards)]
    counts = [TermCounts.load(next(s.glob("bm25.g*.npz")), next(s.glob("bm25_vocab.g*.json"))) for s in shards]
    stats = CorpusStats.merge([CorpusStats.of(c) for c in counts])
    del counts
    settings = IndexSettings(dense=DenseIndexSettings(kind=args.kind))
    first = json.loads((folder / shard_name(0) / "manifest.json").read_text())
    manifest = {"n_shards": args.shards, "settings": settings.model_dump(mode="json"), "embedder": first["embedder"],
                "bm25": first["bm25"], "sources": [], "failures": [],
                "counts": {"documents": args.shards * args.size // 2, "chunks": args.shards * args.size,
                           "active_chunks": args.shards * args.size, "duplicates": 0,
                           "per_shard": [args.size] * args.shards}}  # fmt: skip
    commit_sharded(out, 1, manifest, stats, {})
    (out / "bench_build.json").write_text(json.dumps(builds), encoding="utf-8")
    return out


def measure_scale(index_dir: Path, ray_address: str | None) -> dict[str, Any]:
    """In a fresh process: load, search per mode, dense recall@10 against exact search over every shard."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scale import MEDQUAD as SCALE_MEDQUAD
    from bench_scale import N_QUERIES, SwappedEmbedder, rss_mb

    from rag.core.config import RetrievalSettings
    from rag.index.dense import faiss_id
    from rag.index.shards import load_sharded
    from rag.retrieval.sharded import ShardedSearcher

    index = load_sharded(index_dir)
    queries: list[dict[str, Any]] = []
    per_shard = N_QUERIES // len(index.shard_dirs)
    shard_ids = [chunk_faiss_ids(folder) for folder in index.shard_dirs]  # ids only: the searcher is measured alone
    for ids, folder in zip(shard_ids, index.shard_dirs, strict=True):
        own = json.loads((folder / "bench_queries.json").read_text(encoding="utf-8"))[:per_shard]
        for q in own:
            q["target_id"] = int(ids[q["target"]])
        queries += own
    matrix = np.stack([np.asarray(q["vector"], dtype=np.float32) for q in queries])
    best: list[list[tuple[float, int]]] = [[] for _ in queries]
    for ids, folder in zip(shard_ids, index.shard_dirs, strict=True):  # exact top-10 by brute force over every shard
        vectors = np.load(next(folder.glob("vectors.g*.npy")), mmap_mode="r")
        for start in range(0, len(ids), 200_000):
            scores = np.asarray(vectors[start : start + 200_000]) @ matrix.T
            top = np.argpartition(-scores, 10, axis=0)[:10]
            for qi in range(len(queries)):
                best[qi] += [(float(scores[r, qi]), int(ids[start + r])) for r in top[:, qi]]
    truth_ids = [{i for _, i in sorted(b, reverse=True)[:10]} for b in best]

    questions = [json.loads(line)["text"] for line in (SCALE_MEDQUAD / "queries.jsonl").open(encoding="utf-8")]
    embedder = SwappedEmbedder({q["text"]: np.asarray(q["vector"], dtype=np.float32) for q in queries}, questions)
    embedder.embed([queries[0]["text"]])
    before = rss_mb()
    t0 = time.perf_counter()
    searcher = ShardedSearcher.load(index_dir, embedder, RetrievalSettings(), ray_address=ray_address)  # type: ignore[arg-type]
    load_s = time.perf_counter() - t0
    searcher.search(queries[0]["text"], k=10)
    after = rss_mb()
    n = int(index.manifest["counts"]["active_chunks"])
    result: dict[str, Any] = {"chunks": n, "shards": len(index.shard_dirs), "ray": ray_address,
                              "load_s": round(load_s, 1), "rss_after_load_mb": round(after),
                              "memory_per_chunk_bytes": round((after - before) * 1024 * 1024 / n)}  # fmt: skip
    for mode in ("bm25", "dense", "hybrid"):
        searcher.clear_caches()  # every mode pays for its query embeddings
        times, found, recalls = [], 0, []
        for q, truth in zip(queries, truth_ids, strict=True):
            t1 = time.perf_counter()
            hits = searcher.search(q["text"], k=10, mode=mode)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t1) * 1000)
            found += any(faiss_id(h.chunk.chunk_id) == q["target_id"] for h in hits)
            if mode == "dense":
                recalls.append(len({faiss_id(h.chunk.chunk_id) for h in hits} & truth) / 10)
        result[mode] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                        "p95_ms": round(float(np.percentile(times, 95)), 1),
                        "target_in_top10": round(found / len(queries), 3)}  # fmt: skip
        if recalls:
            result[mode]["recall_at_10_of_exact"] = round(float(np.mean(recalls)), 4)
    searcher.close()
    return result


def chunk_faiss_ids(folder: Path) -> np.ndarray:
    """FAISS ids of a bundle's searchable chunks in row order, read without building chunk records."""
    from rag.index.dense import faiss_id

    ids = []
    with next(folder.glob("chunks.g*.jsonl")).open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if not row.get("duplicate_of"):
                ids.append(faiss_id(row["id"]))
    return np.asarray(ids, dtype=np.int64)


def scale(args: argparse.Namespace) -> dict[str, Any]:
    out = build_scale(args)
    if args.build_only:
        return {"built": str(out)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "measure", str(out)] + (["--ray", args.ray] if args.ray else [])
    measured = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    build = json.loads((out / "bench_build.json").read_text(encoding="utf-8"))
    return {"size_per_shard": args.size, "kind": args.kind, "build": build, **measured}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    eq = sub.add_parser("equivalence")
    eq.add_argument("--single", type=Path, required=True)
    eq.add_argument("--sharded", type=Path, required=True)
    eq.add_argument("--shards", type=int, default=4)
    eq.add_argument("--limit", type=int, help="first N dev queries (default: all)")
    eq.add_argument("--modes", nargs="+", default=["hybrid", "bm25", "dense"])
    tp = sub.add_parser("throughput")
    tp.add_argument("--docs", type=int, default=1500)
    tp.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    tp.add_argument("--shards", type=int, default=4)
    tp.add_argument("--workdir", type=Path, default=Path("/tmp/clinrag-shards"))
    sc = sub.add_parser("scale")
    sc.add_argument("--shards", type=int, default=4)
    sc.add_argument("--size", type=int, default=1_000_000)
    sc.add_argument("--kind", default="ivfpq", choices=["flat", "ivfflat", "ivfpq"])
    sc.add_argument("--workdir", type=Path, default=Path("/tmp/clinrag-shards"))
    sc.add_argument("--ray", help="search with one Ray actor per shard (e.g. local)")
    sc.add_argument("--build-only", action="store_true", help="write the shards; measure with a later run")
    ms = sub.add_parser("measure")  # internal: the fresh-process half of `scale`
    ms.add_argument("index", type=Path)
    ms.add_argument("--ray")
    for p in (eq, tp, sc):
        p.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(json.dumps(measure_scale(args.index, args.ray)))
        return 0
    args.__dict__.get("workdir", Path(".")).mkdir(parents=True, exist_ok=True)
    result = {"equivalence": equivalence, "throughput": throughput, "scale": scale}[args.command](args)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
