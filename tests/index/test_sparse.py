"""BM25 over sparse matrices: parity with rank-bm25, stored counts round trip, incremental extension."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from rag.core.config import BM25Settings
from rag.index.sparse import BM25Index, TermCounts
from rag.text.tokenize import ClinicalTokenizer, TokenizerConfig

WORDS = (
    "insulin metformin hba1c egfr statin aspirin warfarin apixaban dose renal hepatic pregnancy "
    "asthma inhaler steroid cough fever pneumonia amoxicillin allergy rash nausea"
).split()


VOCAB = [*WORDS, *(f"term{i}" for i in range(400))]
ZIPF = [1.0 / (rank + 1) for rank in range(len(VOCAB))]


def _corpus(seed: int, n: int = 300) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.choices(VOCAB, weights=ZIPF, k=rng.randint(3, 40)) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_and_top10_match_rank_bm25(seed: int) -> None:
    docs = _corpus(seed)
    params = BM25Settings(k1=1.5, b=0.75, idf="robertson")
    ours = BM25Index(TermCounts.from_tokens(docs), params)
    reference = BM25Okapi(docs, k1=1.5, b=0.75, epsilon=0.25)
    rng = random.Random(seed + 100)
    for _ in range(20):
        query = [rng.choice(VOCAB[:80]) for _ in range(rng.randint(1, 5))] + ["unknownterm"]
        expected = reference.get_scores(query)
        got = ours.scores(query)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        top = [row for row, _ in ours.top_k(query, 10)]
        ref_top = [i for i in sorted(range(len(docs)), key=lambda i: (-expected[i], i))[:10] if expected[i] > 0]
        assert len(top) == len(ref_top) >= 1
        # Same documents in the same order; only exact score ties may be ordered differently.
        assert [round(float(expected[i]), 4) for i in top] == [round(float(expected[i]), 4) for i in ref_top]
        boundary = float(expected[ref_top[-1]])
        assert all(abs(float(expected[i]) - boundary) < 1e-4 for i in set(top) ^ set(ref_top))


def test_lucene_idf_is_never_negative() -> None:
    docs = [["fever"]] * 9 + [["fever", "rash"]]
    index = BM25Index(TermCounts.from_tokens(docs), BM25Settings())
    assert index.scores(["fever"]).min() > 0
    assert index.top_k(["rash"], 3)[0][0] == 9


def test_counts_round_trip_and_extend(tmp_path: Path) -> None:
    counts = TermCounts.from_tokens([["a", "b", "a"], ["c"]])
    counts.save(tmp_path / "c.npz", tmp_path / "v.json")
    loaded = TermCounts.load(tmp_path / "c.npz", tmp_path / "v.json")
    assert loaded.vocab == ("a", "b", "c")
    assert loaded.matrix.toarray().tolist() == [[2, 1, 0], [0, 0, 1]]
    grown = loaded.extend([["d", "a"]])
    assert grown.vocab == ("a", "b", "c", "d")
    assert grown.matrix.toarray().tolist() == [[2, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    assert grown.select_rows([2, 0]).matrix.toarray().tolist() == [[1, 0, 0, 1], [2, 1, 0, 0]]


def test_top_k_respects_mask_and_ignores_zero_scores() -> None:
    index = BM25Index(TermCounts.from_tokens([["x"], ["x", "y"], ["z"]]), BM25Settings())
    allowed = np.array([False, True, True])
    assert [r for r, _ in index.top_k(["x"], 5, allowed)] == [1]
    assert index.top_k(["nothing"], 5) == []


def _full_sort_top_k(scores: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> list[tuple[int, float]]:
    keys = np.arange(scores.size) if tiebreak is None else tiebreak
    rows = sorted((r for r in range(scores.size) if scores[r] > 0), key=lambda r: (-scores[r], keys[r]))
    return [(r, float(scores[r])) for r in rows[:k]]


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_top_k_of_a_large_corpus_equals_a_full_sort(seed: int) -> None:
    # Thousands of chunks, most matching a common term, many exact copies (ties at the cut): the selection that
    # skips most positive rows must still return exactly the full sort's list, with masks and tiebreak keys.
    rng = random.Random(seed)
    base = _corpus(seed, n=1500)
    docs = base + [list(base[rng.randrange(100)]) for _ in range(1500)] + [["insulin"]] * 200
    index = BM25Index(TermCounts.from_tokens(docs), BM25Settings())
    tiebreak = np.asarray(rng.sample(range(10**6), len(docs)), dtype=np.int64)
    allowed = np.asarray([rng.random() < 0.7 for _ in docs])
    for _ in range(30):
        query = [rng.choice(VOCAB[:40]) for _ in range(rng.randint(1, 6))]
        k = rng.choice([1, 10, 100, 300])
        scores = index.scores(query)
        assert index.top_k(query, k) == _full_sort_top_k(scores, k)
        assert index.top_k(query, k, tiebreak=tiebreak) == _full_sort_top_k(scores, k, tiebreak)
        masked = np.where(allowed, scores, 0.0).astype(np.float32)
        assert index.top_k(query, k, allowed, tiebreak) == _full_sort_top_k(masked, k, tiebreak)
    assert index.top_k(["insulin"], 150) == _full_sort_top_k(index.scores(["insulin"]), 150)


def test_top_k_when_the_sampled_rows_are_the_best_ones() -> None:
    # Every 64th chunk scores highest, so a strided sample overestimates the k-th score: the selection must notice
    # too few rows pass and fall back to all positive rows.
    docs = [["insulin"] * 5 if i % 64 == 0 else ["insulin", "dose", "renal", f"term{i % 300}"] for i in range(3200)]
    index = BM25Index(TermCounts.from_tokens(docs), BM25Settings())
    got = index.top_k(["insulin"], 100)
    assert got == _full_sort_top_k(index.scores(["insulin"]), 100)
    assert len(got) == 100 and sum(row % 64 == 0 for row, _ in got) == 50


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HbA1c above 7%", {"hba1c", "7"}),
        ("COVID-19 vaccine", {"covid-19", "covid", "19"}),
        ("a beta-blocker", {"beta-block", "beta", "blocker"}),
        ("take 5-mg tablets", {"5-mg", "5", "mg"}),
        ("if eGFR<30 stop", {"egfr<30", "egfr", "30"}),
        ("2.5 mg daily", {"2.5", "mg"}),
    ],
)
def test_clinical_tokens_survive(text: str, expected: set[str]) -> None:
    tokens = set(ClinicalTokenizer(TokenizerConfig(stem=False, stopwords=True)).tokenize(text))
    stemmed = set(ClinicalTokenizer().tokenize(text))
    assert expected - {"beta-block"} <= tokens | stemmed
    assert "the" not in tokens and "if" not in tokens


def test_stemming_matches_plural_and_keeps_negation() -> None:
    tok = ClinicalTokenizer()
    assert tok.tokenize("inhalers") == tok.tokenize("inhaler")
    assert "no" in tok.tokenize("no penicillin allergy") and "not" in tok.tokenize("not recommended")
