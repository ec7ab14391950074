"""Fusing ranked lists from several retrievers. Pure functions over hashable keys (chunk rows or ids).

Each input ranking is best-first `(key, score)` pairs. A key that a retriever lists twice counts once, at
its best rank: LangChain's EnsembleRetriever adds every occurrence, which lets a duplicated passage outrank
better ones.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Fused(Generic[K]):
    key: K
    score: float
    ranks: dict[str, int] = field(default_factory=dict)  # 1-based rank in each retriever that found it
    scores: dict[str, float] = field(default_factory=dict)  # that retriever's own score


def first_occurrences(ranking: Sequence[tuple[K, float]]) -> list[tuple[K, float]]:
    """The ranking with repeated keys removed, keeping each key's best (first) position."""
    seen: set[K] = set()
    out = []
    for key, score in ranking:
        if key not in seen:
            seen.add(key)
            out.append((key, score))
    return out


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[tuple[K, float]]],
    k: float = 60.0,
    weights: Mapping[str, float] | None = None,
) -> list[Fused[K]]:
    """score(d) = sum over retrievers r of w_r / (k + rank_r(d)); best first, ties broken by key order seen."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    fused: dict[K, float] = {}
    ranks: dict[K, dict[str, int]] = {}
    scores: dict[K, dict[str, float]] = {}
    for name, ranking in rankings.items():
        weight = 1.0 if weights is None else float(weights.get(name, 0.0))
        for rank, (key, score) in enumerate(first_occurrences(ranking), start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
            ranks.setdefault(key, {})[name] = rank
            scores.setdefault(key, {})[name] = score
    return _sorted(fused, ranks, scores)


def convex_combination(
    rankings: Mapping[str, Sequence[tuple[K, float]]],
    weights: Mapping[str, float],
) -> list[Fused[K]]:
    """score(d) = sum_r w_r * minmax_r(score_r(d)); a retriever that did not find d contributes 0."""
    fused: dict[K, float] = {}
    ranks: dict[K, dict[str, int]] = {}
    scores: dict[K, dict[str, float]] = {}
    for name, ranking in rankings.items():
        unique = first_occurrences(ranking)
        if not unique:
            continue
        values = np.asarray([s for _, s in unique], dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        span = high - low
        weight = float(weights.get(name, 0.0))
        for rank, (key, score) in enumerate(unique, start=1):
            normalised = (score - low) / span if span > 0 else 1.0
            fused[key] = fused.get(key, 0.0) + weight * normalised
            ranks.setdefault(key, {})[name] = rank
            scores.setdefault(key, {})[name] = score
    return _sorted(fused, ranks, scores)


def _sorted(fused: dict[K, float], ranks: dict[K, dict[str, int]], scores: dict[K, dict[str, float]]) -> list[Fused[K]]:
    # Python's sort is stable: equal scores keep first-seen order, so results are reproducible.
    order = sorted(fused, key=lambda key: -fused[key])
    return [Fused(key, fused[key], ranks[key], scores[key]) for key in order]


def collapse(items: Sequence[Fused[K]], group_of: Callable[[K], Hashable], per_group: int = 1) -> list[Fused[K]]:
    """Keep at most `per_group` items per group (e.g. one chunk per document), in order."""
    if per_group < 1:
        raise ValueError(f"per_group must be >= 1, got {per_group}")
    taken: dict[Hashable, int] = {}
    out = []
    for item in items:
        group = group_of(item.key)
        if taken.get(group, 0) < per_group:
            taken[group] = taken.get(group, 0) + 1
            out.append(item)
    return out


def maximal_marginal_relevance(
    items: Sequence[Fused[K]],
    vectors: npt.NDArray[np.float32],
    k: int,
    lambda_: float = 0.7,
) -> list[Fused[K]]:
    """Re-order for diversity: each pick maximises lambda * relevance - (1 - lambda) * max similarity to picks.

    `vectors[i]` is the unit vector of `items[i]`; relevance is the fused score rescaled to [0, 1].
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"MMR lambda must be within [0, 1], got {lambda_}")
    if len(items) != len(vectors):
        raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
    if not items or k <= 0:
        return []
    relevance = np.asarray([item.score for item in items], dtype=np.float64)
    span = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / span if span > 0 else np.ones_like(relevance)
    similarity = np.asarray(vectors, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    picked: list[int] = [int(np.argmax(relevance))]
    max_sim = similarity[picked[0]].copy()
    while len(picked) < min(k, len(items)):
        gain = lambda_ * relevance - (1 - lambda_) * max_sim
        gain[picked] = -np.inf
        nxt = int(np.argmax(gain))
        picked.append(nxt)
        max_sim = np.maximum(max_sim, similarity[nxt])
    return [items[i] for i in picked]
