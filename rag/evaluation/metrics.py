"""Ranking metrics over document ids, as BEIR and trec_eval define them (graded relevance for nDCG).

A ranked entry is a document id, or a group of ids that share one rank: an index chunk that stands for every
document whose duplicate passage was collapsed into it. A group's gain is its best judged document's grade and
each document is credited once, so nDCG stays within [0, 1]; recall counts every judged document a top-k group holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Ranked = Sequence[str | tuple[str, ...]]


def as_groups(ranked: Ranked) -> list[tuple[str, ...]]:
    return [(item,) if isinstance(item, str) else tuple(item) for item in ranked]


def ndcg_at_k(ranked: Ranked, qrels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (relevance grade / log2(rank + 1)), as pytrec_eval computes it."""
    credited: set[str] = set()
    dcg = 0.0
    for i, group in enumerate(as_groups(ranked)[:k]):
        gain = max((qrels.get(doc, 0) for doc in group if doc not in credited), default=0)
        credited.update(group)
        dcg += gain / math.log2(i + 2)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Ranked, qrels: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, grade in qrels.items() if grade > 0}
    if not relevant:
        return 0.0
    found = {doc for group in as_groups(ranked)[:k] for doc in group}
    return len(relevant & found) / len(relevant)


def mrr_at_k(ranked: Ranked, qrels: Mapping[str, int], k: int = 10) -> float:
    for i, group in enumerate(as_groups(ranked)[:k]):
        if any(qrels.get(doc, 0) > 0 for doc in group):
            return 1.0 / (i + 1)
    return 0.0


def unique_in_order(items: Sequence[str]) -> list[str]:
    """Chunk-level results become document-level: each document at its best rank."""
    return list(dict.fromkeys(items))


def unique_groups(items: Ranked) -> list[tuple[str, ...]]:
    """`unique_in_order` for groups: a group keeps the documents not ranked before it, and is dropped if none."""
    seen: set[str] = set()
    out: list[tuple[str, ...]] = []
    for group in as_groups(items):
        fresh = tuple(dict.fromkeys(doc for doc in group if doc not in seen))
        if fresh:
            out.append(fresh)
            seen.update(fresh)
    return out
