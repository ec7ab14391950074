"""The reranker's ship rule (issue 34): on by default only for what it improves, on every judged set at once.

Reads the JSON written by `benchmarks/bench_rerank_blend.py --json FILE` for one reranker on several sets
(MedQuAD dev, MedicationQA, the NGC dev questions, the demo questions), each holding document nDCG@10 of the fused
order and of the reranked order with its learnt fused-rank prior scaled by x0, x0.5, ... A scale is allowed when
the reranked order is no worse than the fused order on any set (within --tolerance: a single question of the
88 NGC ones moves nDCG by about 0.01); among the allowed scales the one with the best mean gain over the fused order
wins. No allowed scale: the reranker should be off by default (`answer.rerank = false`).

    python benchmarks/ship_rule.py blend_medquad.json blend_mqa.json blend_ngc.json blend_demo.json [--json]

The decision is `retrieval.rerank_prior_scale` (rag/core/config.py); answers are measured separately
(`clinrag eval answers`), since a reranker also picks the sentences an extractive answer quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def decide(results: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The scale allowed on every set with the best mean gain over the fused order, or None."""
    scales = [name for name in results[0]["ndcg@10"] if name != "fused"]
    rows: dict[str, dict[str, float]] = {}
    for name in scales:
        gains = {r["set"]: r["ndcg@10"][name] - r["ndcg@10"]["fused"] for r in results if name in r["ndcg@10"]}
        if len(gains) == len(results):
            rows[name] = gains
    allowed = {name: gains for name, gains in rows.items() if min(gains.values()) >= -tolerance}
    best = max(allowed, key=lambda n: sum(allowed[n].values()) / len(results), default=None)
    return {
        "tolerance": tolerance,
        "gain_over_fused": {name: {s: round(g, 4) for s, g in gains.items()} for name, gains in rows.items()},
        "allowed": sorted(allowed),
        "chosen": best,
        "rerank_prior_scale": float(best[1:]) if best else None,
        "verdict": f"rerank with retrieval.rerank_prior_scale = {best[1:]}" if best else "rerank off by default",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="bench_rerank_blend.py --json files, one per set")
    parser.add_argument("--tolerance", type=float, default=0.005, help="nDCG@10 a set may lose (default 0.005)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    rerankers = {r.get("reranker", "default") for r in results}
    if len(rerankers) > 1:
        parser.error(f"the files measure different rerankers ({', '.join(sorted(rerankers))}); give one reranker's")
    decision = {"reranker": rerankers.pop(), **decide(results, args.tolerance)}
    if args.json:
        print(json.dumps(decision, indent=2))
        return 0
    sets = [r["set"] for r in results]
    print(f"reranker {decision['reranker']}; nDCG@10 gain over the fused order per set")
    print("scale  " + "  ".join(f"{Path(s).stem[:14]:>14}" for s in sets))
    for name, gains in decision["gain_over_fused"].items():
        mark = "*" if name == decision["chosen"] else " " if name in decision["allowed"] else "x"
        print(f"{name:<5}{mark} " + "  ".join(f"{gains[s]:>+14.4f}" for s in sets))
    print(decision["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
