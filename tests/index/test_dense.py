"""FAISS indexes: ids derived from chunk ids, exact search by default, HNSW and IVF-PQ close to exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.core.config import DenseIndexSettings
from rag.index.dense import (
    build_dense_index,
    effective_kind,
    filtered_search_parameters,
    read_dense_index,
    search_dense,
    stored_ids,
    write_dense_index,
)


def _unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Clustered, like real embeddings, so ANN recall is meaningful.
    centres = rng.normal(size=(32, dim))
    vectors = centres[rng.integers(0, 32, n)] + 0.5 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _recall_at_10(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)]))


@pytest.mark.parametrize(("kind", "floor"), [("hnsw", 0.95), ("ivfflat", 0.8), ("ivfpq", 0.6)])
def test_ann_indexes_are_close_to_exact(tmp_path: Path, kind: str, floor: float) -> None:
    vectors = _unit_vectors(12_000, 64)
    ids = np.arange(1000, 1000 + len(vectors), dtype=np.int64)
    queries = _unit_vectors(50, 64, seed=1)
    exact = build_dense_index(vectors, ids, DenseIndexSettings())
    settings = DenseIndexSettings(kind=kind, pq_m=16, ivf_nlist=64, ivf_nprobe=16)  # type: ignore[arg-type]
    assert effective_kind(settings, len(vectors), 64) == kind
    ann = build_dense_index(vectors, ids, settings)
    write_dense_index(ann, tmp_path / "ann.faiss")
    ann = read_dense_index(tmp_path / "ann.faiss", settings)
    assert sorted(stored_ids(ann).tolist()) == ids.tolist()
    _, exact_ids = search_dense(exact, queries, 10)
    _, ann_ids = search_dense(ann, queries, 10)
    assert _recall_at_10(ann_ids, exact_ids) >= floor


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfflat", "ivfpq"])
def test_filtered_search_returns_only_allowed_ids(kind: str) -> None:
    import faiss

    vectors = _unit_vectors(12_000, 64)
    ids = np.arange(len(vectors), dtype=np.int64) * 3
    settings = DenseIndexSettings(kind=kind, pq_m=16, ivf_nlist=64, ivf_nprobe=8)  # type: ignore[arg-type]
    index = build_dense_index(vectors, ids, settings)
    allowed = ids[::7]
    selector = faiss.IDSelectorBatch(allowed)
    params = filtered_search_parameters(index, selector)
    _, found = index.search(vectors[:3], 10, params=params)
    hits = found[found >= 0]
    assert hits.size and set(hits.tolist()) <= set(allowed.tolist())
    if kind.startswith("ivf"):
        assert params.nprobe == 8  # the index's own setting survives the filter


def test_exact_index_finds_itself_and_keeps_ids() -> None:
    vectors = _unit_vectors(200, 16)
    ids = np.arange(7, 207, dtype=np.int64)
    index = build_dense_index(vectors, ids, DenseIndexSettings())
    scores, found = search_dense(index, vectors[:5], 1)
    assert found[:, 0].tolist() == ids[:5].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert stored_ids(index).tolist() == ids.tolist()


def test_ivfpq_falls_back_to_flat_when_too_small_to_train() -> None:
    settings = DenseIndexSettings(kind="ivfpq", pq_m=16)
    assert effective_kind(settings, 500, 64) == "flat"
    with pytest.raises(ValueError, match="must divide"):
        effective_kind(DenseIndexSettings(kind="ivfpq", pq_m=10), 100_000, 64)


def test_empty_index_searches_to_nothing() -> None:
    index = build_dense_index(np.zeros((0, 8), dtype=np.float32), np.zeros(0, dtype=np.int64), DenseIndexSettings())
    scores, ids = search_dense(index, np.ones((1, 8), dtype=np.float32), 5)
    assert scores.shape == (1, 0) and ids.shape == (1, 0)


def test_ivfpq_candidates_are_rescored_exactly_from_the_vectors() -> None:
    from rag.core.types import Chunk
    from rag.retrieval.search import DenseRetriever
    from rag.testing import HashEmbedder

    vectors = _unit_vectors(3000, 32, seed=4)
    chunks = [Chunk(f"{i:020x}", f"d{i}", "t", "", (), 0, 1, None, None, 1, f"{i:020x}") for i in range(3000)]
    ids = np.asarray([int(c.chunk_id[:15], 16) for c in chunks], dtype=np.int64)
    settings = DenseIndexSettings(kind="ivfpq", ivf_nlist=16, ivf_nprobe=4, pq_m=4, pq_bits=4)
    index = build_dense_index(vectors, ids, settings)
    query = _unit_vectors(1, 32, seed=9)[0]
    exact_order = np.argsort(-(vectors @ query))[:10]
    plain = DenseRetriever(index, chunks, HashEmbedder(dim=32)).retrieve_vector(query, 10)
    rescored = DenseRetriever(index, chunks, HashEmbedder(dim=32), rescore_from=vectors, rescore=8).retrieve_vector(
        query, 10
    )
    for row, score in rescored:
        assert score == pytest.approx(float(vectors[row] @ query), abs=1e-5)
    assert [s for _, s in rescored] == sorted((s for _, s in rescored), reverse=True)
    overlap = lambda hits: len({r for r, _ in hits} & set(exact_order.tolist()))  # noqa: E731
    assert overlap(rescored) >= overlap(plain)
    assert any(abs(s - float(vectors[r] @ query)) > 1e-3 for r, s in plain), "PQ scores alone are approximate"
