"""Indexing benchmark: MedQuAD + PubMedQA corpora + the guideline PDFs, with the default embedder.

Prints chunk count, chunks/s, peak memory, bundle size, the time of a no-change rebuild and of adding 1% new
documents, and indexing throughput against raw `SentenceTransformer.encode` on (a random sample of) the same
chunks. Everything runs in a temporary folder with a fresh embedding cache, so the first build embeds all.

    python benchmarks/bench_index.py [--raw-sample 4000] [--json results.json]
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def split_medquad(workdir: Path, share: float, seed: int = 13) -> tuple[Path, Path, int]:
    """MedQuAD without `share` of its documents, and those documents as the 'new' file to add later."""
    lines = (DATA / "retrieval" / "medquad" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    held = set(rng.sample(range(len(lines)), max(1, round(share * len(lines)))))
    base, new = workdir / "medquad-base.jsonl", workdir / "medquad-new.jsonl"
    base.write_text("\n".join(line for i, line in enumerate(lines) if i not in held) + "\n", encoding="utf-8")
    new.write_text("\n".join(line for i, line in enumerate(lines) if i in held) + "\n", encoding="utf-8")
    return base, new, len(held)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-sample", type=int, default=4000, help="chunks for the raw encode baseline (0 = all)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    from indexer import add_sources, build_index
    from rag.core.config import IndexSettings
    from rag.index.store import load_bundle
    from rag.models.embed import load_embedder

    with tempfile.TemporaryDirectory(prefix="clinrag-bench-") as tmp:
        work = Path(tmp)
        # 1% of all documents (MedQuAD + PubMedQA + PDFs) are held back and added afterwards.
        total_docs = 16407 + 1000 + 4
        base, new, n_new = split_medquad(work, share=0.01 * total_docs / 16407)
        manifest = {"clinrag_corpus": 1, "type": "consumer-health", "source": "MedQuAD (NIH)", "licence": "CC BY 4.0"}
        for name, path in (("medquad-base.corpus.json", base), ("medquad-new.corpus.json", new)):
            (work / name).write_text(json.dumps({**manifest, "path": str(path)}))
        pubmedqa = ROOT / "corpora" / "datasets" / "pubmedqa.corpus.json"
        sources = [work / "medquad-base.corpus.json", pubmedqa, DATA / "guidelines"]
        settings = IndexSettings.model_validate({"cache_dir": str(work / "cache")})
        out = work / "index"

        t0 = time.perf_counter()
        first = build_index(sources, out, settings, progress=args.progress)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = build_index(sources, out, settings, progress=args.progress)
        nochange_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        added = add_sources(out, [work / "medquad-new.corpus.json"], progress=args.progress)
        add_s = time.perf_counter() - t0
        bundle_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6

        chunks = load_bundle(out).active_chunks
        texts = [c.indexed_text for c in chunks]
        sample = texts if args.raw_sample <= 0 else random.Random(7).sample(texts, min(args.raw_sample, len(texts)))
        embedder = load_embedder(settings.embedder)
        t0 = time.perf_counter()
        embedder.model.encode(sample, batch_size=settings.embedder.batch_size, normalize_embeddings=True)
        raw_s = time.perf_counter() - t0

    raw_rate = len(sample) / raw_s
    index_rate = first.searchable_chunks / first_s
    embed_rate = first.vectors_embedded / first.timings["vectors"]
    figures = {
        "documents": first.documents,
        "chunks": first.chunks,
        "searchable_chunks": first.searchable_chunks,
        "duplicates_collapsed": first.duplicates,
        "failures": len(first.failures),
        "first_build_s": round(first_s, 1),
        "first_build_timings_s": {k: round(v, 1) for k, v in first.timings.items()},
        "indexing_chunks_per_s": round(index_rate, 2),
        "embedding_step_chunks_per_s": round(embed_rate, 2),
        "raw_encode_chunks_per_s": round(raw_rate, 2),
        "raw_encode_sample": len(sample),
        "indexing_vs_raw_encode": round(index_rate / raw_rate, 3),
        "no_change_rebuild_s": round(nochange_s, 2),
        "no_change_rebuild_share": round(nochange_s / first_s, 4),
        "no_change_committed": again.committed,
        "add_1pct_documents": n_new,
        "add_1pct_s": round(add_s, 2),
        "add_1pct_share": round(add_s / first_s, 4),
        "add_1pct_embedded": added.vectors_embedded,
        "add_1pct_timings_s": {k: round(v, 2) for k, v in added.timings.items()},
        "bundle_mb": round(bundle_mb, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    targets = {
        "indexing >= 90% of raw encode": figures["indexing_vs_raw_encode"] >= 0.9,
        "no-change rebuild <= 5% of first build": figures["no_change_rebuild_share"] <= 0.05,
        "adding 1% documents <= 5% of first build": figures["add_1pct_share"] <= 0.05,
    }
    for name, ok in targets.items():
        print(f"target {'met' if ok else 'MISSED'}: {name}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"figures": figures, "targets": targets}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
