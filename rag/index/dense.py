"""FAISS indexes over chunk vectors: exact inner product by default, HNSW or IVF-PQ for large corpora.

Every index is wrapped so that FAISS ids are derived from chunk ids (`faiss_id`), which lets `verify` check
that FAISS and the chunk table agree on ids, not only on counts. FAISS's own binary format is used on disk.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.core.config import DenseIndexSettings

Ids = npt.NDArray[np.int64]


def faiss_id(chunk_id: str) -> int:
    """A non-negative 60-bit integer from the chunk id's hex digits."""
    return int(chunk_id[:15], 16)


def faiss_ids(chunk_ids: Sequence[str]) -> Ids:
    return np.fromiter((faiss_id(c) for c in chunk_ids), dtype=np.int64, count=len(chunk_ids))


def build_dense_index(vectors: npt.NDArray[np.float32], ids: Ids, settings: DenseIndexSettings) -> Any:
    """A FAISS index over `vectors` (rows already L2-normalised when cosine is wanted) with the given ids."""
    import faiss

    index: Any
    n, dim = vectors.shape
    kind = effective_kind(settings, n, dim)
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = settings.hnsw_ef_construction
        inner.hnsw.efSearch = settings.hnsw_ef_search
        index = faiss.IndexIDMap2(inner)
    elif kind in ("ivfflat", "ivfpq"):
        nlist = ivf_lists(settings, n)
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivfflat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, settings.pq_m, settings.pq_bits, faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(vectors, nlist))
        index.nprobe = settings.ivf_nprobe
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    return index


def ivf_lists(settings: DenseIndexSettings, n: int) -> int:
    return settings.ivf_nlist or max(1, int(4 * math.sqrt(n)))


def _training_sample(vectors: npt.NDArray[np.float32], nlist: int) -> npt.NDArray[np.float32]:
    # k-means needs ~40-256 points per list; training on all of a 1M-vector corpus costs minutes for nothing.
    limit = 256 * nlist
    if len(vectors) <= limit:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=limit, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def effective_kind(settings: DenseIndexSettings, n: int, dim: int) -> str:
    """The index kind actually built for n vectors (IVF kinds fall back to flat on small corpora)."""
    if settings.kind == "ivfpq" and dim % settings.pq_m:
        raise ValueError(f"dense.pq_m={settings.pq_m} must divide the embedding dimension {dim}")
    if settings.kind in ("ivfflat", "ivfpq"):
        # IVF needs enough vectors to train its lists (and PQ its codebooks); below that exact search is both
        # better and cheap.
        floor = 39 * ivf_lists(settings, n)
        if settings.kind == "ivfpq":
            floor = max(floor, 2**settings.pq_bits * 39)
        if n < floor:
            return "flat"
    return settings.kind


def filtered_search_parameters(index: Any, selector: Any) -> Any:
    """Search parameters that restrict a search to `selector` and keep the index's own nprobe / efSearch.

    IVF indexes reject plain `SearchParameters` (they need the IVF subclass), and parameters passed at search
    time replace the ones set on the index, so they are copied across.
    """
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        ivf = None
    params: Any
    if ivf is not None:
        params = faiss.SearchParametersIVF()
        params.nprobe = ivf.nprobe
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params


def stored_ids(index: Any) -> Ids:
    """The ids an index holds, in insertion order (for IVF indexes, in list order)."""
    import faiss

    if isinstance(index, faiss.IndexIDMap) or hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists: Any = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def write_dense_index(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_dense_index(path: Path, settings: DenseIndexSettings | None = None) -> Any:
    import faiss

    index = faiss.read_index(str(path))
    if settings is not None:
        _apply_search_params(index, settings)
    return index


def _apply_search_params(index: Any, settings: DenseIndexSettings) -> None:
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = settings.hnsw_ef_search
    with contextlib.suppress(RuntimeError):  # not an IVF index
        faiss.extract_index_ivf(index).nprobe = settings.ivf_nprobe


def search_dense(index: Any, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], Ids]:
    """Top-k (scores, ids) per query row; missing results have id -1."""
    if index.ntotal == 0 or k <= 0:
        n = queries.shape[0]
        return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))
    return scores, ids
