"""BM25 as sparse matrices: term counts are stored, weights are computed on load, queries are column sums.

The stored part is a CSR matrix of term counts (chunks x vocabulary) plus the vocabulary: enough to rebuild
the index cheaply when chunks are added or removed, with no pickle. Scoring never loops over documents in
Python: a query sums a few columns of a precomputed CSC weight matrix, as bm25s does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from rag.core.config import BM25Settings
from rag.index.npio import NUMPY_LOAD_LOCK

Scores = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TermCounts:
    """Bag-of-words counts of each chunk: row i is chunk i, column j is `vocab[j]`."""

    matrix: sp.csr_matrix
    vocab: tuple[str, ...]

    @property
    def n_docs(self) -> int:
        return int(self.matrix.shape[0])

    def select_rows(self, rows: Sequence[int]) -> TermCounts:
        return TermCounts(self.matrix[np.asarray(rows, dtype=np.int64)], self.vocab)

    def extend(self, token_lists: Sequence[Sequence[str]]) -> TermCounts:
        """Append chunks, growing the vocabulary as needed; existing columns keep their index."""
        index = {term: j for j, term in enumerate(self.vocab)}
        vocab = list(self.vocab)
        indptr = [0]
        indices: list[int] = []
        data: list[int] = []
        for tokens in token_lists:
            counts: dict[int, int] = {}
            for token in tokens:
                j = index.get(token)
                if j is None:
                    j = index[token] = len(vocab)
                    vocab.append(token)
                counts[j] = counts.get(j, 0) + 1
            for j in sorted(counts):
                indices.append(j)
                data.append(counts[j])
            indptr.append(len(indices))
        new_rows = sp.csr_matrix(
            (np.asarray(data, dtype=np.int32), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(token_lists), len(vocab)),
        )
        old = self.matrix
        old = sp.csr_matrix((old.data, old.indices, old.indptr), shape=(old.shape[0], len(vocab)))
        return TermCounts(sp.vstack([old, new_rows], format="csr").astype(np.int32), tuple(vocab))

    @staticmethod
    def empty() -> TermCounts:
        return TermCounts(sp.csr_matrix((0, 0), dtype=np.int32), ())

    @staticmethod
    def from_tokens(token_lists: Sequence[Sequence[str]]) -> TermCounts:
        return TermCounts.empty().extend(token_lists)

    def save(self, counts_path: Path, vocab_path: Path) -> None:
        m = self.matrix
        with counts_path.open("wb") as fh:
            np.savez(
                fh,
                data=m.data.astype(np.int32),
                indices=m.indices.astype(np.int32),
                indptr=m.indptr.astype(np.int64),
                shape=np.asarray(m.shape, dtype=np.int64),
            )
        vocab_path.write_text(json.dumps(list(self.vocab), ensure_ascii=False), encoding="utf-8")

    @staticmethod
    def load(counts_path: Path, vocab_path: Path) -> TermCounts:
        with NUMPY_LOAD_LOCK, np.load(counts_path, allow_pickle=False) as arrays:  # headers parse on access
            shape = tuple(int(x) for x in arrays["shape"])
            matrix = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        vocab = tuple(json.loads(vocab_path.read_text(encoding="utf-8")))
        if len(vocab) != shape[1]:
            raise ValueError(f"{vocab_path}: {len(vocab)} terms but the count matrix has {shape[1]} columns")
        return TermCounts(matrix, vocab)


@dataclass(frozen=True)
class CorpusStats:
    """What BM25 needs to know of the whole corpus: its size, total length and each term's document frequency.

    One shard of a sharded index scores with the stats of all shards together, so its BM25 scores are exactly
    those the single bundle would give and rankings from different shards can be merged by score.
    """

    n_docs: int
    total_length: int
    vocab: tuple[str, ...]
    df: npt.NDArray[np.int64]

    @staticmethod
    def of(counts: TermCounts) -> CorpusStats:
        matrix = counts.matrix
        df = np.bincount(matrix.indices, minlength=len(counts.vocab)).astype(np.int64)
        return CorpusStats(counts.n_docs, int(matrix.sum()), counts.vocab, df)

    @staticmethod
    def merge(parts: Sequence[CorpusStats]) -> CorpusStats:
        """The stats of the union of disjoint corpora; the vocabulary in first-seen order."""
        index: dict[str, int] = {}
        for part in parts:
            for term in part.vocab:
                index.setdefault(term, len(index))
        df = np.zeros(len(index), dtype=np.int64)
        for part in parts:
            if part.vocab:
                np.add.at(df, np.fromiter((index[t] for t in part.vocab), np.int64, len(part.vocab)), part.df)
        return CorpusStats(sum(p.n_docs for p in parts), sum(p.total_length for p in parts), tuple(index), df)

    def save(self, stats_path: Path, vocab_path: Path) -> None:
        with stats_path.open("wb") as fh:
            np.savez(fh, df=self.df, totals=np.asarray([self.n_docs, self.total_length], dtype=np.int64))
        vocab_path.write_text(json.dumps(list(self.vocab), ensure_ascii=False), encoding="utf-8")

    @staticmethod
    def load(stats_path: Path, vocab_path: Path) -> CorpusStats:
        with NUMPY_LOAD_LOCK, np.load(stats_path, allow_pickle=False) as arrays:
            df, totals = arrays["df"].astype(np.int64), arrays["totals"]
        vocab = tuple(json.loads(vocab_path.read_text(encoding="utf-8")))
        if len(vocab) != len(df) or totals.shape != (2,):
            raise ValueError(f"{stats_path}: {len(df)} document frequencies for {len(vocab)} terms")
        return CorpusStats(int(totals[0]), int(totals[1]), vocab, df)


class BM25Index:
    """Okapi BM25 over stored term counts; `stats` of a larger corpus (all shards) replace the counts' own."""

    def __init__(self, counts: TermCounts, params: BM25Settings, stats: CorpusStats | None = None) -> None:
        self.counts = counts
        self.params = params
        self._term_index = {term: j for j, term in enumerate(counts.vocab)}
        self._weights = _weight_matrix(counts.matrix, params, _global_idf(counts, params, stats), stats).tocsc()

    @property
    def n_docs(self) -> int:
        return self.counts.n_docs

    def term_ids(self, tokens: Sequence[str]) -> list[int]:
        """Column ids of the query tokens this index knows (repeats kept: BM25 sums per query token)."""
        return [j for j in (self._term_index.get(t) for t in tokens) if j is not None]

    def scores(self, tokens: Sequence[str]) -> Scores:
        """BM25 score of every chunk for the query tokens."""
        ids = self.term_ids(tokens)
        if not ids or self.n_docs == 0:
            return np.zeros(self.n_docs, dtype=np.float32)
        unique, repeats = np.unique(np.asarray(ids), return_counts=True)
        # Summed in the order of the terms' text, not of their column numbers (which differ between the shards of
        # a sharded index and a single bundle): float32 sums then agree to the last bit, and so do rankings.
        by_text = sorted(range(len(unique)), key=lambda i: self.counts.vocab[unique[i]])
        unique, repeats = unique[by_text], repeats[by_text]
        columns = self._weights[:, unique]
        return np.asarray(columns @ repeats.astype(np.float32), dtype=np.float32).ravel()

    def top_k(
        self,
        tokens: Sequence[str],
        k: int,
        allowed: npt.NDArray[np.bool_] | None = None,
        tiebreak: npt.NDArray[np.int64] | None = None,
    ) -> list[tuple[int, float]]:
        """The k best (row, score) pairs with a positive score, best first; `allowed` masks rows out.

        Equal scores are ordered by `tiebreak[row]` (default: the row), also at the cut, so that the shards of a
        sharded index, ordering ties by the same per-chunk key, return exactly what one bundle would."""
        scores = self.scores(tokens)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0).astype(np.float32)
        if k <= 0:
            return []
        candidates = _at_least(scores, k)
        if candidates.size == 0:
            return []
        values = scores[candidates]
        if candidates.size > k:
            kth = np.partition(values, candidates.size - k)[candidates.size - k]
            keep = values >= kth  # every candidate tied with the k-th stays in
            candidates, values = candidates[keep], values[keep]
        keys = candidates if tiebreak is None else tiebreak[candidates]
        order = np.lexsort((keys, -values))[:k]
        return [(int(candidates[i]), float(values[i])) for i in order]


def _at_least(scores: Scores, k: int, stride: int = 64) -> npt.NDArray[np.intp]:
    """Rows with a positive score, or, when there are many, a subset holding every row of the k best.

    Common query terms give most of a large shard a positive score (~780k of 1M), and gathering and partitioning
    them all costs more than scoring. A strided sample's ~4k/stride-th best score is a threshold that about 4k rows
    reach; when at least k rows reach it, the k-th best score is at or above it, so the rows above it include every
    row of the k best and every row tied with the k-th. Otherwise fall back to all positive rows: exact either way.
    """
    if scores.size >= 16 * stride and k * 8 < scores.size:
        sample = scores[::stride]
        rank = min(sample.size - 1, -(-4 * k // stride))
        threshold = np.partition(sample, sample.size - 1 - rank)[sample.size - 1 - rank]
        if threshold > 0:
            above = np.flatnonzero(scores >= threshold)
            if above.size >= k:
                return above
    return np.flatnonzero(scores > 0)


def idf_values(df: npt.NDArray[np.float64], n_docs: int, kind: str) -> npt.NDArray[np.float64]:
    if kind == "lucene":
        return np.log1p((n_docs - df + 0.5) / (df + 0.5))
    # rank-bm25's BM25Okapi: negative idf (terms in over half the docs) floored at 0.25 * mean idf.
    idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
    floor = 0.25 * float(idf.mean()) if idf.size else 0.0
    return np.where(idf < 0, floor, idf)


def _global_idf(counts: TermCounts, params: BM25Settings, stats: CorpusStats | None) -> npt.NDArray[np.float64] | None:
    """The idf of each of `counts`' terms under the whole corpus' stats (the floor of robertson idf included)."""
    if stats is None:
        return None
    idf_all = idf_values(stats.df.astype(np.float64), stats.n_docs, params.idf)
    where = {term: j for j, term in enumerate(stats.vocab)}
    missing = [t for t in counts.vocab if t not in where]
    if missing:
        raise ValueError(f"the corpus statistics lack {len(missing)} of this shard's terms (e.g. {missing[0]!r})")
    return idf_all[np.fromiter((where[t] for t in counts.vocab), np.int64, len(counts.vocab))]


def _weight_matrix(
    counts: sp.csr_matrix,
    params: BM25Settings,
    idf: npt.NDArray[np.float64] | None = None,
    stats: CorpusStats | None = None,
) -> sp.csr_matrix:
    n_docs, n_terms = counts.shape
    if n_docs == 0 or n_terms == 0:
        return sp.csr_matrix((n_docs, n_terms), dtype=np.float32)
    tf = counts.astype(np.float64)
    doc_len = np.asarray(tf.sum(axis=1)).ravel()
    if stats is not None:
        avg_len = (stats.total_length / stats.n_docs if stats.n_docs else 0.0) or 1.0
    else:
        avg_len = float(doc_len.mean()) or 1.0
    if idf is None:
        df = np.bincount(tf.indices, minlength=n_terms).astype(np.float64)
        idf = idf_values(df, n_docs, params.idf)
    norm = params.k1 * (1.0 - params.b + params.b * doc_len / avg_len)
    row_norm = np.repeat(norm, np.diff(tf.indptr))
    data = idf[tf.indices] * tf.data * (params.k1 + 1.0) / (tf.data + row_norm)
    return sp.csr_matrix((data.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape)
