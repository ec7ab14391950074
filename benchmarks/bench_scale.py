"""Hybrid search at 100k and 1M chunks on synthetic corpora: latency, ANN recall and memory per chunk.

Nothing is embedded at this scale on 2 cores (1M chunks would take ~12 hours), so the corpus is synthetic but
shaped like the real one:
- BM25 side: chunk lengths and term frequencies follow the MedQuAD corpus as the clinrag tokenizer sees it
  (its real terms, ranked by frequency, with a Zipf tail of extra rare terms so the vocabulary keeps growing
  with the corpus as Heaps' law says it does). Queries are 3-8 terms drawn from one target chunk plus one
  frequent term, like a keyword question.
- Dense side: 384-d unit vectors with the neighbour structure of real MiniLM vectors of MedQuAD (a common
  direction, families of topics, groups of passages on one topic; see SHARES). A query is a noisy copy of
  its target chunk's vector (cosine ~0.8).
- Latency includes a real MiniLM forward pass per query (a real MedQuAD question), whose vector is then
  swapped for the synthetic one: the embedding cost is paid exactly as a user pays it.

The bundle is written with the real store (`write_generation`) and measured in a fresh process through
`Searcher.load`, so load time and resident memory are what a user would see.

    python benchmarks/bench_scale.py --sizes 100000 1000000 --workdir /tmp/scale [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
MEDQUAD = ROOT.parent / "shared" / "data" / "retrieval" / "medquad"
DIM = 384
EMBEDDER_NAME = "synthetic/clustered-384"
N_QUERIES = 300


def real_term_frequencies(limit_docs: int = 6000) -> tuple[list[str], npt.NDArray[np.float64], list[int]]:
    """MedQuAD terms by frequency under the clinrag tokenizer, and the token lengths of passages."""
    from rag.text.tokenize import ClinicalTokenizer

    tokenizer = ClinicalTokenizer()
    counts: dict[str, int] = {}
    lengths = []
    with (MEDQUAD / "corpus.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= limit_docs:
                break
            row = json.loads(line)
            tokens = tokenizer.tokenize(f"{row.get('title', '')} {row['text']}")
            # Real chunks hold at most ~256 model tokens, about 120 BM25 tokens once stop words are gone.
            for start in range(0, max(len(tokens), 1), 120):
                part = tokens[start : start + 120]
                if part:
                    lengths.append(len(part))
                for t in part:
                    counts[t] = counts.get(t, 0) + 1
    terms = sorted(counts, key=lambda t: -counts[t])
    freqs = np.array([counts[t] for t in terms], dtype=np.float64)
    return terms, freqs, lengths


def term_distribution(n_chunks: int, terms: list[str], freqs: npt.NDArray[np.float64]) -> tuple[list[str], Any]:
    """Real terms keep their real frequencies; a Zipf tail of rare terms grows with the corpus."""
    total_tokens = n_chunks * 100
    # Heaps' law, V = K * T^0.5 with K fitted to the real sample, gives the expected vocabulary.
    k = len(terms) / np.sqrt(freqs.sum())
    vocab_size = max(len(terms), int(k * np.sqrt(total_tokens)))
    tail = vocab_size - len(terms)
    tail_freqs = freqs[-1] * (1.0 / np.arange(2, tail + 2)) ** 0.3 if tail else np.zeros(0)
    probs = np.concatenate([freqs, tail_freqs])
    probs /= probs.sum()
    names = terms + [f"rareterm{i}" for i in range(tail)]
    return names, np.cumsum(probs)


def term_counts_block(
    rng: np.random.Generator, lengths: npt.NDArray[np.int64], cdf: npt.NDArray[np.float64], vocab: int
) -> sp.csr_matrix:
    """CSR counts of len(lengths) chunks, built with array operations only."""
    draws = np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right").clip(0, vocab - 1)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    keys, counts = np.unique(rows * vocab + draws, return_counts=True)
    matrix = sp.csr_matrix(
        (counts.astype(np.int32), ((keys // vocab).astype(np.int64), (keys % vocab).astype(np.int64))),
        shape=(len(lengths), vocab),
    )
    matrix.sort_indices()
    return matrix


# Variance shares of the parts of a synthetic vector, chosen so that at MedQuAD's size (25k chunks) the
# neighbour structure matches real MiniLM vectors of MedQuAD: median cosine to a random chunk 0.18 (real
# 0.184: embeddings share a common direction), to the nearest neighbour ~0.82 (real 0.824) and to the 10th
# ~0.65 (real 0.671). Passages come in groups of 8 (one topic, several question types, like MedQuAD) within
# families of 200. Well-separated clusters would make any ANN index look perfect.
SHARES = {"common": 0.18, "family": 0.45, "group": 0.20, "own": 0.17}
GROUP, FAMILY = 8, 200


def structured_vectors(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    def unit_rows(k: int) -> npt.NDArray[np.float32]:
        x = rng.normal(size=(k, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    common = unit_rows(1)[0]
    families = unit_rows(n // FAMILY + 1)
    groups = unit_rows(n // GROUP + 1)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        rows = np.arange(start, min(n, start + 100_000))
        part = (
            np.sqrt(SHARES["common"]) * common
            + np.sqrt(SHARES["family"]) * families[rows // FAMILY]
            + np.sqrt(SHARES["group"]) * groups[rows // GROUP]
            + np.sqrt(SHARES["own"]) * unit_rows(len(rows))
        )
        out[rows] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def build_bundle(n_chunks: int, out: Path, kind: str, seed: int = 0, prefix: str = "") -> dict[str, Any]:
    """A synthetic bundle at `out`; `prefix` keeps document (hence chunk) ids distinct across shards."""
    from rag.core.config import DenseIndexSettings, IndexSettings
    from rag.core.types import Chunk, DocumentMeta
    from rag.index.dense import build_dense_index, effective_kind, faiss_ids
    from rag.index.sparse import TermCounts
    from rag.index.store import DocumentRecord, StoredChunk, write_generation, write_lock
    from rag.text.tokenize import ClinicalTokenizer

    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    terms, freqs, real_lengths = real_term_frequencies()
    vocab, cdf = term_distribution(n_chunks, terms, freqs)
    lengths = rng.choice(np.asarray(real_lengths, dtype=np.int64), size=n_chunks)
    blocks = [
        term_counts_block(rng, lengths[start : start + 100_000], cdf, len(vocab))
        for start in range(0, n_chunks, 100_000)
    ]
    matrix = sp.vstack(blocks, format="csr")
    used = np.unique(matrix.indices)
    matrix = matrix[:, used].tocsr()
    vocab = [vocab[j] for j in used]
    counts = TermCounts(matrix, tuple(vocab))
    timings["bm25_counts_s"] = time.perf_counter() - started

    started = time.perf_counter()
    vectors = structured_vectors(rng, n_chunks)
    timings["vectors_s"] = time.perf_counter() - started

    started = time.perf_counter()
    documents, chunks = [], []
    vocab_arr = np.asarray(vocab, dtype=object)
    for row in range(n_chunks):
        doc_id = f"{prefix}doc{row // 2}"
        if row % 2 == 0:
            meta = DocumentMeta(f"Synthetic topic {row // 2}", "literature", "synthetic", 2000 + row % 25)
            documents.append(DocumentRecord(doc_id, meta, "synthetic", "0" * 64))
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        text = " ".join(vocab_arr[matrix.indices[lo:hi]])
        chunk_id = hashlib.blake2b(f"{doc_id}:{row}".encode(), digest_size=16).hexdigest()
        chunks.append(
            StoredChunk(
                Chunk(
                    chunk_id,
                    doc_id,
                    text,
                    f"Synthetic topic {row // 2}",
                    (),
                    0,
                    len(text),
                    None,
                    None,
                    int(lengths[row]),
                    chunk_id,
                )
            )
        )
    timings["chunk_records_s"] = time.perf_counter() - started

    settings = IndexSettings(dense=DenseIndexSettings(kind=kind))  # type: ignore[arg-type]
    started = time.perf_counter()
    dense_index = build_dense_index(vectors, faiss_ids([c.chunk.chunk_id for c in chunks]), settings.dense)
    timings["dense_index_s"] = time.perf_counter() - started
    tokenizer = ClinicalTokenizer()
    manifest = {
        "settings": settings.model_dump(mode="json"),
        "embedder": {"name": EMBEDDER_NAME, "dim": DIM, "normalized": True, "max_tokens": 256},
        "bm25": {**settings.bm25.model_dump(mode="json"), "tokenizer": tokenizer.config.to_json()},
        "dense": {
            **settings.dense.model_dump(mode="json"),
            "built_kind": effective_kind(settings.dense, n_chunks, DIM),
        },
        "counts": {"documents": len(documents), "chunks": n_chunks, "active_chunks": n_chunks, "duplicates": 0},
        "sources": [],
        "failures": [],
    }
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with write_lock(out):
        write_generation(out, manifest, documents, chunks, vectors, dense_index, counts)
    timings["write_s"] = time.perf_counter() - started

    queries = make_queries(rng, matrix, vocab, vectors, N_QUERIES)
    (out / "bench_queries.json").write_text(json.dumps(queries), encoding="utf-8")
    bundle_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
    return {
        "vocabulary": len(vocab),
        "nnz": int(matrix.nnz),
        "bundle_mb": round(bundle_mb, 1),
        **{k: round(v, 1) for k, v in timings.items()},
    }


def make_queries(
    rng: np.random.Generator, matrix: sp.csr_matrix, vocab: Sequence[str], vectors: npt.NDArray[np.float32], n: int
) -> list[dict[str, Any]]:
    targets = rng.choice(matrix.shape[0], size=n, replace=False)
    queries = []
    for row in targets:
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        own = matrix.indices[lo:hi]
        picked = rng.choice(own, size=min(len(own), int(rng.integers(3, 9))), replace=False)
        words = [vocab[j] for j in picked] + [vocab[int(rng.integers(0, 50))]]
        # A question is not its passage: cosine ~0.8 to its target, like MedQuAD questions to their answers.
        noisy = vectors[row] + 0.75 * unit(rng.normal(size=DIM).astype(np.float32))
        queries.append(
            {"text": " ".join(words), "target": int(row), "vector": (noisy / np.linalg.norm(noisy)).tolist()}
        )
    return queries


def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return x / np.linalg.norm(x)


class SwappedEmbedder:
    """Pays for a real MiniLM query embedding, then returns the synthetic vector of the benchmark query."""

    def __init__(self, vectors: dict[str, npt.NDArray[np.float32]], questions: list[str]) -> None:
        from rag.core.config import EmbedderSettings
        from rag.models.embed import load_embedder

        self._real = load_embedder(EmbedderSettings())
        self._vectors = vectors
        self._questions = questions
        self._calls = 0
        self.name, self.dim, self.max_tokens, self.normalized = EMBEDDER_NAME, DIM, 256, True

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return self._real.token_spans(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._real.count_tokens(texts)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        question = self._questions[self._calls % len(self._questions)]
        self._calls += 1
        self._real.embed([question])
        return np.stack([self._vectors[t] for t in texts])


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(index_dir: Path, nprobes: Sequence[int]) -> dict[str, Any]:
    """Run in a fresh process: load, search per mode, ANN recall against exact search."""
    import faiss

    from rag.core.config import RetrievalSettings
    from rag.index.store import load_bundle
    from rag.retrieval.search import Searcher

    queries = json.loads((index_dir / "bench_queries.json").read_text(encoding="utf-8"))
    questions = [json.loads(line)["text"] for line in (MEDQUAD / "queries.jsonl").open(encoding="utf-8")][:N_QUERIES]
    vectors = {q["text"]: np.asarray(q["vector"], dtype=np.float32) for q in queries}
    embedder = SwappedEmbedder(vectors, questions)
    embedder.embed([queries[0]["text"]])  # model loaded outside the memory and latency figures
    before = rss_mb()
    started = time.perf_counter()
    searcher = Searcher.load(index_dir, embedder, settings=RetrievalSettings())
    load_s = time.perf_counter() - started
    n = len(searcher.chunks)
    searcher.search(queries[0]["text"], k=10)
    after = rss_mb()
    result: dict[str, Any] = {
        "chunks": n,
        "load_s": round(load_s, 1),
        "rss_after_load_mb": round(after),
        "memory_per_chunk_bytes": round((after - before) * 1024 * 1024 / n),
    }
    for mode in ("bm25", "dense", "hybrid"):
        searcher.clear_caches()
        times, found = [], 0
        for q in queries:
            t0 = time.perf_counter()
            hits = searcher.search(q["text"], k=10, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
            found += any(h.chunk.chunk_id == searcher.chunks[q["target"]].chunk_id for h in hits)
        result[mode] = {
            "p50_ms": round(float(np.percentile(times, 50)), 1),
            "p95_ms": round(float(np.percentile(times, 95)), 1),
            "target_in_top10": round(found / len(queries), 3),
        }

    bundle = load_bundle(index_dir)
    matrix = np.stack([vectors[q["text"]] for q in queries])
    exact = faiss.IndexFlatIP(DIM)
    exact.add(np.ascontiguousarray(bundle.vectors))
    _, truth = exact.search(matrix, 10)
    ann = searcher.retrievers["dense"].index  # type: ignore[attr-defined]
    row_ids = searcher.retrievers["dense"].ids  # type: ignore[attr-defined]
    sweep = []
    ivf = faiss.extract_index_ivf(ann) if bundle.manifest["dense"]["built_kind"].startswith("ivf") else None
    for nprobe in nprobes if ivf is not None else [0]:
        if ivf is not None:
            ivf.nprobe = nprobe
        times = []
        recalls = []
        for i in range(len(queries)):
            t0 = time.perf_counter()
            _, ids = ann.search(matrix[i : i + 1], 100)
            times.append((time.perf_counter() - t0) * 1000)
            recalls.append(len(set(ids[0][:10].tolist()) & set(row_ids[truth[i]].tolist())) / 10)
        sweep.append(
            {
                "nprobe": nprobe,
                "recall_at_10": round(float(np.mean(recalls)), 4),
                "dense_search_p50_ms": round(float(np.percentile(times, 50)), 2),
            }
        )
    result["ann"] = sweep
    result["rss_end_mb"] = round(rss_mb())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/clinrag-scale"))
    parser.add_argument("--kind", default="ivfflat", choices=["flat", "hnsw", "ivfflat", "ivfpq"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--reuse", action="store_true", help="measure existing bundles in --workdir")
    parser.add_argument("--build-only", action="store_true", help="write the bundles, measure later with --reuse")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the fresh-process half
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.nprobe)))
        return 0
    report = []
    for size in args.sizes:
        out = args.workdir / f"scale-{size}-{args.kind}"
        build: dict[str, Any] = {}
        if not (args.reuse and (out / "manifest.json").is_file()):
            print(f"building {size:,} synthetic chunks -> {out}", file=sys.stderr, flush=True)
            build = build_bundle(size, out, args.kind)
            print(json.dumps(build), file=sys.stderr, flush=True)
            (out / "bench_build.json").write_text(json.dumps(build), encoding="utf-8")
        elif (out / "bench_build.json").is_file():
            build = json.loads((out / "bench_build.json").read_text(encoding="utf-8"))
        if args.build_only:
            continue
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        cmd = [sys.executable, __file__, "--measure", str(out), "--nprobe", *map(str, args.nprobe)]
        measured = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
        row = {"chunks": size, "kind": args.kind, "build": build, **measured}
        report.append(row)
        print(json.dumps(row, indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
