"""De-duplication: exact (normalised) and near (MinHash + LSH, verified by exact Jaccard) duplicates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.dedup import find_duplicates, normalise
from rag.core.types import Chunk

VOCAB = [f"term{i}" for i in range(400)] + "fever cough dose tablet daily child adult risk sign test".split()


def chunk(text: str, cid: str, breadcrumb: str = "") -> Chunk:
    return Chunk(cid, "doc", text, breadcrumb, (), 0, len(text), None, None, 0, f"hash-{cid}")


def words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n)]


def jaccard(a: str, b: str) -> float:
    def grams(text: str) -> set[tuple[str, ...]]:
        ws = normalise(text).split()
        return {tuple(ws[i : i + 5]) for i in range(len(ws) - 4)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_exact_duplicates_ignore_case_whitespace_punctuation_and_breadcrumb() -> None:
    chunks = [
        chunk("Take ONE tablet,  twice daily.\nWith food!", "a", "Leaflet A"),
        chunk("take one tablet twice daily with food", "b", "Leaflet B > Dosing"),
        chunk("Take one tablet three times daily with food.", "c"),
    ]
    assert find_duplicates(chunks, 0.9) == {"b": "a"}


def test_near_duplicate_one_word_changed_in_200_is_collapsed() -> None:
    base = words(200, seed=1)
    changed = list(base)
    changed[100] = "substituted"
    chunks = [chunk(" ".join(base), "a"), chunk(" ".join(changed), "b")]
    assert jaccard(chunks[0].text, chunks[1].text) > 0.9
    assert find_duplicates(chunks, 0.9) == {"b": "a"}


def test_different_text_is_not_collapsed() -> None:
    chunks = [chunk(" ".join(words(150, seed=s)), f"c{s}") for s in range(20)]
    assert find_duplicates(chunks, 0.9) == {}


def test_earliest_survives_and_every_copy_maps_to_it() -> None:
    base = words(120, seed=2)
    copies = []
    for k in range(4):
        variant = list(base)
        variant[10 + 25 * k] = f"changed{k}"
        copies.append(" ".join(variant))
    chunks = [chunk(" ".join(words(120, seed=3)), "other"), *(chunk(t, f"v{k}") for k, t in enumerate(copies))]
    chunks.append(chunk(copies[2].upper(), "exact-of-v2"))
    assert min(jaccard(copies[0], t) for t in copies[1:]) > 0.8
    found = find_duplicates(chunks, 0.8)
    assert found == {"v1": "v0", "v2": "v0", "v3": "v0", "exact-of-v2": "v0"}
    reversed_found = find_duplicates(chunks[::-1], 0.8)
    assert set(reversed_found.values()) == {"exact-of-v2"}


def test_threshold_is_respected_with_exact_jaccard() -> None:
    base = words(200, seed=4)
    changed = list(base)
    for pos in (20, 60, 100, 140, 180):
        changed[pos] = "different"
    a, b = " ".join(base), " ".join(changed)
    similarity = jaccard(a, b)
    assert 0.6 < similarity < 0.8
    chunks = [chunk(a, "a"), chunk(b, "b")]
    assert find_duplicates(chunks, similarity - 0.01) == {"b": "a"}
    assert find_duplicates(chunks, similarity + 0.01) == {}


def test_short_texts_use_exact_match_only() -> None:
    chunks = [
        chunk("Fever and cough", "a"),
        chunk("fever, and cough.", "b"),
        chunk("fever and cough today", "c"),
        chunk("fever and cough now", "d"),
    ]
    assert find_duplicates(chunks, 0.1) == {"b": "a"}


def test_edge_cases() -> None:
    assert find_duplicates([], 0.9) == {}
    same = chunk("one two three four five six", "x")
    assert find_duplicates([same, same], 0.9) == {}  # the same chunk twice is not its own duplicate
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates([same], 0.0)


def test_normalise() -> None:
    assert normalise("  Héllo,\tWORLD!! 2.5 mg ") == "héllo world 2 5 mg"


_TEXT = st.lists(st.sampled_from(VOCAB[:30]), min_size=0, max_size=40).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TEXT, max_size=25), st.floats(0.3, 1.0))
def test_every_mapping_is_sound(texts: list[str], threshold: float) -> None:
    chunks = [chunk(t, f"id{i}") for i, t in enumerate(texts)]
    found = find_duplicates(chunks, threshold)
    index = {c.chunk_id: i for i, c in enumerate(chunks)}
    for dup, survivor in found.items():
        assert survivor not in found  # maps straight to a survivor
        assert index[survivor] < index[dup]  # the earliest survives
        assert find_duplicates(chunks, threshold) == found  # deterministic
    for i, c in enumerate(chunks):
        key = normalise(c.text)
        first = next(j for j, d in enumerate(chunks) if normalise(d.text) == key)
        if first != i:
            assert c.chunk_id in found  # exact duplicates are never missed
    for dup, survivor in found.items():
        a, b = chunks[index[survivor]].text, chunks[index[dup]].text
        assert normalise(a) == normalise(b) or jaccard(a, b) >= threshold


@pytest.mark.slow
def test_medquad_sample_mappings_are_sound(shared_data: Path) -> None:
    corpus = shared_data / "retrieval" / "medquad" / "corpus.jsonl"
    if not corpus.is_file():
        pytest.skip(f"{corpus} not found")
    with corpus.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(3000), strict=False)]
    chunks = [chunk(r["text"], r["_id"], r.get("title", "")) for r in records]
    found = find_duplicates(chunks, 0.9)
    assert found  # MedQuAD repeats answers across questions
    texts = {c.chunk_id: c.text for c in chunks}
    for dup, survivor in found.items():
        a, b = texts[survivor], texts[dup]
        assert normalise(a) == normalise(b) or jaccard(a, b) >= 0.9
