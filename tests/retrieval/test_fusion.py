"""Fusion functions: RRF, convex combination, duplicates, collapse and MMR."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rag.retrieval.fusion import (
    collapse,
    convex_combination,
    first_occurrences,
    maximal_marginal_relevance,
    reciprocal_rank_fusion,
)


def test_rrf_by_hand() -> None:
    fused = reciprocal_rank_fusion({"bm25": [("a", 9.0), ("b", 5.0)], "dense": [("b", 0.9), ("c", 0.8)]}, k=60)
    assert [f.key for f in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].ranks == {"bm25": 2, "dense": 1} and fused[0].scores == {"bm25": 5.0, "dense": 0.9}
    assert fused[1].ranks == {"bm25": 1}


def test_duplicates_within_a_list_do_not_inflate_a_score() -> None:
    # LangChain's EnsembleRetriever would add "x" twice here and put it first.
    fused = reciprocal_rank_fusion({"bm25": [("y", 3.0), ("x", 2.0), ("x", 2.0)], "dense": [("y", 0.5), ("x", 0.4)]})
    assert [f.key for f in fused] == ["y", "x"]
    assert fused[1].score == pytest.approx(1 / 62 + 1 / 62)
    assert first_occurrences([("a", 1.0), ("a", 0.5), ("b", 0.2)]) == [("a", 1.0), ("b", 0.2)]


def test_rrf_weights_and_k() -> None:
    rankings = {"bm25": [("a", 1.0)], "dense": [("b", 1.0)]}
    assert [f.key for f in reciprocal_rank_fusion(rankings, weights={"bm25": 1.0, "dense": 2.0})] == ["b", "a"]
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion(rankings, k=-1)


def test_convex_combination_normalises_each_retriever() -> None:
    fused = convex_combination(
        {"bm25": [("a", 30.0), ("b", 10.0)], "dense": [("b", 0.9), ("a", 0.1)]}, {"bm25": 0.3, "dense": 0.7}
    )
    assert [f.key for f in fused] == ["b", "a"]
    assert fused[0].score == pytest.approx(0.7) and fused[1].score == pytest.approx(0.3)
    single = convex_combination({"bm25": [("a", 2.0)]}, {"bm25": 1.0})
    assert single[0].score == 1.0


def test_collapse_keeps_best_per_group() -> None:
    fused = reciprocal_rank_fusion({"r": [("d1#1", 3.0), ("d1#2", 2.0), ("d2#1", 1.0)]})
    kept = collapse(fused, lambda key: key.split("#")[0])
    assert [f.key for f in kept] == ["d1#1", "d2#1"]
    assert len(collapse(fused, lambda key: key.split("#")[0], per_group=2)) == 3


def test_mmr_prefers_diverse_results() -> None:
    fused = reciprocal_rank_fusion({"r": [("a", 3.0), ("a-copy", 2.9), ("b", 1.0)]})
    vectors = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert [f.key for f in maximal_marginal_relevance(fused, vectors, k=2, lambda_=0.5)] == ["a", "b"]
    assert [f.key for f in maximal_marginal_relevance(fused, vectors, k=2, lambda_=1.0)] == ["a", "a-copy"]


@given(
    st.dictionaries(
        st.sampled_from(["bm25", "dense", "other"]),
        st.lists(st.tuples(st.integers(0, 30), st.floats(-5, 5, allow_nan=False)), max_size=25),
        min_size=1,
    )
)
def test_fusion_properties(rankings: dict[str, list[tuple[int, float]]]) -> None:
    fused = reciprocal_rank_fusion(rankings)
    keys = [f.key for f in fused]
    assert len(keys) == len(set(keys))
    assert set(keys) == {key for ranking in rankings.values() for key, _ in ranking}
    assert all(a.score >= b.score for a, b in itertools.pairwise(fused))
    for item in fused:
        assert item.score == pytest.approx(sum(1 / (60 + r) for r in item.ranks.values()))
