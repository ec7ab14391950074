"""Exact and near-duplicate detection over chunk texts: normalised-text equality, then MinHash + LSH.

The breadcrumb is ignored on purpose: the same passage under two titles (a leaflet copied into two sites)
is still one piece of evidence. The earliest chunk in input order survives; every other member of its
cluster maps straight to it, never to another duplicate.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from rag.core.types import Chunk

U64 = npt.NDArray[np.uint64]
Idx = npt.NDArray[np.intp]

SHINGLE_WORDS = 5
NUM_PERM = 128
_PUNCT = re.compile(r"[^\w\s]+")
_SEED = 0x5EED_C11A_6A65  # fixed: signatures, hence results, are identical across runs and machines
_MIX = np.uint64(0x9E37_79B9_7F4A_7C15)  # odd multiplier that spreads word hashes over 64 bits
_MIN_RECALL = 0.99  # chance that a pair exactly at the threshold becomes an LSH candidate
_BLOCK_SHINGLES = 1 << 16


def normalise(text: str) -> str:
    """Casefolded, punctuation stripped, whitespace collapsed: the key of exact de-duplication."""
    return " ".join(_words(text))


def _words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.casefold()).split()


def find_duplicates(chunks: Sequence[Chunk], threshold: float) -> dict[str, str]:
    """Map each duplicate chunk_id to the chunk_id of the earliest chunk it collapses into.

    Exact duplicates share `normalise(text)`; near duplicates have a Jaccard similarity of their word
    5-gram sets >= `threshold` (texts under 5 words are compared exactly only).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    words = [_words(c.text) for c in chunks]
    parent = _exact_parents([" ".join(w) for w in words])
    reps = [i for i, p in enumerate(parent) if p == i]
    shingles = _shingle_sets([words[i] for i in reps])
    for a, b in _near_pairs(shingles, threshold):
        parent[reps[b]] = reps[a]
    out: dict[str, str] = {}
    for i, chunk in enumerate(chunks):
        root = _root(parent, i)
        if root != i and chunks[root].chunk_id != chunk.chunk_id:
            out[chunk.chunk_id] = chunks[root].chunk_id
    return out


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def _exact_parents(keys: Sequence[str]) -> list[int]:
    first: dict[str, int] = {}
    return [first.setdefault(key, i) for i, key in enumerate(keys)]


def _shingle_sets(docs: Sequence[list[str]]) -> list[U64]:
    """Sorted unique 64-bit hashes of each text's word 5-grams (empty for texts under 5 words)."""
    all_words = list(itertools.chain.from_iterable(docs))
    vocab = {w: i for i, w in enumerate(dict.fromkeys(all_words))}
    # A hash of the word itself, not its vocabulary index, so a text's shingles never depend on its neighbours.
    word_hash = np.fromiter(
        (int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in vocab),
        np.uint64,
        len(vocab),
    )
    flat = word_hash[np.fromiter(map(vocab.__getitem__, all_words), np.int64, len(all_words))]
    n_grams = len(flat) - SHINGLE_WORDS + 1
    if n_grams <= 0:
        return [np.zeros(0, np.uint64) for _ in docs]
    grams = np.zeros(n_grams, dtype=np.uint64)
    for offset in range(SHINGLE_WORDS):
        grams = grams * _MIX + flat[offset : offset + n_grams]  # uint64 wraparound is intended
    lengths = [len(words) for words in docs]
    starts = itertools.accumulate(lengths, initial=0)
    return [
        np.unique(grams[s : s + n - SHINGLE_WORDS + 1]) if n >= SHINGLE_WORDS else np.zeros(0, np.uint64)
        for s, n in zip(starts, lengths, strict=False)
    ]


def _near_pairs(shingles: Sequence[U64], threshold: float) -> list[tuple[int, int]]:
    """(survivor, duplicate) index pairs: each later text joins the earliest surviving text it is near."""
    members = [i for i, s in enumerate(shingles) if len(s)]
    if len(members) < 2:
        return []
    signatures = _minhash([shingles[i] for i in members])
    # Agreement of signatures estimates Jaccard with sd sqrt(t(1-t)/NUM_PERM); 6 sd below the threshold only
    # prunes pairs that are near-certainly under it, so the exact check runs on few pairs in templated corpora.
    need = NUM_PERM * (threshold - 6.0 * math.sqrt(threshold * (1.0 - threshold) / NUM_PERM))
    is_dup = np.zeros(len(members), dtype=bool)
    pairs: list[tuple[int, int]] = []
    for j, refs in sorted(_lsh_candidates(signatures, threshold).items()):
        cands = np.unique(np.concatenate([group[:pos] for group, pos in refs]))
        cands = cands[~is_dup[cands]]
        cands = cands[np.count_nonzero(signatures[cands] == signatures[j], axis=1) >= need]
        if not len(cands):
            continue
        similar = np.flatnonzero(_jaccards([shingles[members[i]] for i in cands], shingles[members[j]]) >= threshold)
        if len(similar):
            is_dup[j] = True
            pairs.append((members[int(cands[similar[0]])], members[j]))  # candidates ascend: the earliest wins
    return pairs


def _jaccards(sets: Sequence[U64], target: U64) -> npt.NDArray[np.float64]:
    """Exact Jaccard of each sorted unique set with `target`, in one vectorised pass for all candidates."""
    flat = np.concatenate(sets)
    lengths = np.fromiter((len(s) for s in sets), np.int64, len(sets))
    pos = np.minimum(np.searchsorted(target, flat), len(target) - 1)
    hits = (target[pos] == flat).astype(np.int64)
    inter = np.add.reduceat(hits, np.concatenate(([0], np.cumsum(lengths)[:-1])))
    result: npt.NDArray[np.float64] = inter / (lengths + len(target) - inter)
    return result


def _minhash(sets: Sequence[U64]) -> npt.NDArray[np.uint32]:
    """(len(sets), NUM_PERM) signatures; a permutation is h -> (a*h + b) mod 2**64 with odd a, top 32 bits."""
    rng = np.random.default_rng(_SEED)
    mult = rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    add = rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
    out = np.empty((len(sets), NUM_PERM), dtype=np.uint32)
    first = 0
    while first < len(sets):
        # All permutations for a block of texts at once, perm-major so each reduceat row is contiguous;
        # the block is sized to keep the (NUM_PERM, shingles) buffer near 64 MB.
        last, size = first, 0
        while last < len(sets) and (last == first or size + len(sets[last]) <= _BLOCK_SHINGLES):
            size += len(sets[last])
            last += 1
        flat = np.concatenate(sets[first:last])
        starts = np.fromiter(itertools.accumulate((len(s) for s in sets[first : last - 1]), initial=0), np.intp)
        buf = np.multiply.outer(mult, flat)
        buf += add[:, None]
        buf >>= np.uint64(32)
        out[first:last] = np.minimum.reduceat(buf, starts, axis=1).T
        first = last
    return out


def _bands(threshold: float) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that still keep recall at the threshold."""
    for rows in (16, 8, 4, 2, 1):
        bands = NUM_PERM // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= _MIN_RECALL:
            return bands, rows
    return NUM_PERM, 1


def _lsh_candidates(signatures: npt.NDArray[np.uint32], threshold: float) -> dict[int, list[tuple[Idx, int]]]:
    """For each text, (bucket, position) pairs: bucket[:position] are the earlier texts sharing one whole band.

    Buckets are kept by reference so a cluster of g near copies costs g entries per band, not g * g.
    """
    bands, rows = _bands(threshold)
    refs: dict[int, list[tuple[Idx, int]]] = defaultdict(list)
    for band in range(bands):
        keys = np.zeros(len(signatures), dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            keys = keys * _MIX + signatures[:, col].astype(np.uint64)  # collisions only add candidates
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[inverse] > 1)
        if not len(shared):
            continue
        order = shared[np.argsort(inverse[shared], kind="stable")]
        for group in np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1):
            for pos, j in enumerate(group.tolist()[1:], start=1):
                refs[j].append((group, pos))
    return refs
