"""Worked examples for few-shot prompts, drawn from a labelled pool that is not the evaluation set.

Three selectors: random (seeded per item, so resuming or reordering never changes an item's examples),
semantic (the pool questions closest to the item by embedder cosine) and MMR (close to the item but not to
each other). Whatever the selector, an item is never its own example: candidates with the item's id or its
normalised question text are left out, and by default every evaluated item is removed from the pool.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rag.core.errors import ConfigError
from rag.datasets.qa import QAItem, Readout, normalise_question
from rag.models.embed import Embedder

Vectors = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Pool:
    path: str
    sha256: str
    items: tuple[QAItem, ...]
    excluded: int  # pool rows removed because they are (or repeat) evaluation items


def build_pool(readout: Readout, evaluation: Sequence[QAItem], exclude: str = "evaluation_set") -> Pool:
    """The pool's closed-form items, without the evaluation items when `exclude` is "evaluation_set"."""
    items = list(readout.items)
    if exclude == "evaluation_set":
        ids = {i.item_id for i in evaluation}
        questions = {normalise_question(i.question) for i in evaluation}
        items = [p for p in items if p.item_id not in ids and normalise_question(p.question) not in questions]
    if not items:
        raise ConfigError(
            f"{readout.path}: the example pool is empty once the {len(evaluation)} evaluation items are left out; "
            "use a pool file other than the evaluation set, evaluate fewer items (--limit), or set pool.exclude: item"
        )
    return Pool(readout.path, readout.sha256, tuple(items), len(readout.items) - len(items))


@dataclass
class ExampleSelector:
    """Picks `n` pool items for an evaluation item. Embeddings are computed once per pool and per item."""

    pool: Pool
    seed: int
    embedder: Embedder | None = None
    mmr_lambda: float = 0.5
    _pool_vectors: Vectors | None = field(default=None, init=False, repr=False)
    _item_vectors: dict[str, Vectors] = field(default_factory=dict, init=False, repr=False)

    def select(self, item: QAItem, n: int, method: str) -> list[QAItem]:
        """Examples in prompt order; for semantic and MMR the closest comes last, nearest the question."""
        if n <= 0:
            return []
        allowed = self._candidates(item)
        if not allowed:
            raise ConfigError(f"no pool example is left for item {item.item_id} once it is excluded from the pool")
        if method == "random":
            order = list(allowed)
            random.Random(_item_seed(self.seed, item.item_id)).shuffle(order)
            return [self.pool.items[i] for i in order[:n]]
        if method in ("semantic", "mmr"):
            sims = self._similarities(item)
            chosen = _top(sims, allowed, n) if method == "semantic" else self._mmr(sims, allowed, n)
            return [self.pool.items[i] for i in reversed(chosen)]
        raise ConfigError(f"unknown example selector {method!r}; use random, semantic or mmr")

    def warm(self, items: Sequence[QAItem]) -> None:
        """Embed the pool and these items in two batched calls (instead of one call per item)."""
        if self.embedder is None:
            return
        self._vectors_of_pool()
        todo = [i for i in items if i.item_id not in self._item_vectors]
        if todo:
            vectors = self._embed([i.question for i in todo])
            self._item_vectors.update({i.item_id: vectors[n] for n, i in enumerate(todo)})

    def _candidates(self, item: QAItem) -> list[int]:
        question = normalise_question(item.question)
        return [
            n
            for n, p in enumerate(self.pool.items)
            if p.item_id != item.item_id and normalise_question(p.question) != question
        ]

    def _similarities(self, item: QAItem) -> Vectors:
        if item.item_id not in self._item_vectors:
            self.warm([item])
        return self._vectors_of_pool() @ self._item_vectors[item.item_id]

    def _vectors_of_pool(self) -> Vectors:
        if self._pool_vectors is None:
            self._pool_vectors = self._embed([p.question for p in self.pool.items])
        return self._pool_vectors

    def _embed(self, texts: Sequence[str]) -> Vectors:
        if self.embedder is None:
            raise ConfigError("semantic and MMR example selection need an embedder; pass one or use selector random")
        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float64)

    def _mmr(self, sims: Vectors, allowed: Sequence[int], n: int) -> list[int]:
        pool = self._vectors_of_pool()
        remaining = list(allowed)
        chosen: list[int] = []
        while remaining and len(chosen) < n:
            relevance = sims[remaining]
            redundancy = (pool[remaining] @ pool[chosen].T).max(axis=1) if chosen else np.zeros(len(remaining))
            scores = self.mmr_lambda * relevance - (1.0 - self.mmr_lambda) * redundancy
            best = int(np.argmax(scores))  # the first on a tie: the earlier pool row
            chosen.append(remaining.pop(best))
        return chosen


def _top(sims: Vectors, allowed: Sequence[int], n: int) -> list[int]:
    return sorted(allowed, key=lambda i: (-float(sims[i]), i))[:n]


def _item_seed(seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"clinrag-shots:{seed}:{item_id}".encode()).digest()[:8], "big")
