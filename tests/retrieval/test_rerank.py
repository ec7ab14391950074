"""Reranking inside search, duplicates credited at their rank, and the reranker's training data."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from indexer import build_index
from rag.core.config import IndexSettings, RetrievalSettings
from rag.core.cpu import native_bf16
from rag.core.errors import ConfigError
from rag.core.types import Evidence
from rag.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k, unique_groups
from rag.evaluation.retrieval import RetrievalTask, doc_search, evaluate
from rag.models.crossencoder import CrossEncoder, CrossEncoderConfig
from rag.retrieval.fusion import Fused
from rag.retrieval.rerank import (
    RELEVANCE_LABELS,
    CrossEncoderReranker,
    load_reranker,
    packaged_reranker_path,
    rerank_with,
)
from rag.retrieval.search import Searcher, rerank_pool
from rag.testing import HashEmbedder, LexicalReranker
from rag.training.reranker import RerankQuery, consumer_phrasing, first_chunk_of, mine_groups, split_queries

EMBEDDER = HashEmbedder(dim=32, max_tokens=64)
TREAT = "Nitrofurantoin for five days is the first-line treatment of uncomplicated cystitis in women."
DOCS = {
    "d1": ("Cystitis", "treatment", TREAT),
    "d2": ("Bladder infection", "treatment", TREAT),  # the same passage published twice: collapsed into d1's
    "d3": ("Cystitis", "symptoms", "Cystitis causes burning on urination and frequent urge to pass urine."),
    "d4": ("Asthma", "treatment", "Inhaled budesonide-formoterol relieves asthma symptoms as needed."),
    "d5": ("Hypertension", "treatment", "Thiazide diuretics lower blood pressure in adults."),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rerank")
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": i, "title": t, "text": x, "metadata": {"qtype": q}}) + "\n"
            for i, (t, q, x) in DOCS.items()
        )
    )
    settings = IndexSettings.model_validate({"cache_dir": str(root / "cache")})
    build_index([corpus], root / "index", settings, embedder=EMBEDDER, progress=False)
    return root / "index"


class CountingReranker(LexicalReranker):
    def __init__(self) -> None:
        self.calls: list[int] = []

    def rerank(self, query: str, evidence: list[Evidence]) -> list[Evidence]:
        self.calls.append(len(evidence))
        return list(reversed(evidence))


def test_duplicate_documents_are_carried_by_the_surviving_chunk(index: Path) -> None:
    searcher = Searcher.load(index, EMBEDDER)
    assert len(searcher.chunks) == 4  # d2's copy is not searchable
    hits = searcher.search("nitrofurantoin cystitis", k=2, mode="bm25")
    assert hits[0].chunk.doc_id == "d1" and hits[0].also_in == ("d2",)
    assert hits[0].to_json()["also_in"] == ["d2"]
    assert all(h.also_in == () for h in hits[1:])


def test_evaluation_credits_a_duplicate_at_its_rank(index: Path) -> None:
    searcher = Searcher.load(index, EMBEDDER, RetrievalSettings(collapse_documents=True))
    task = RetrievalTask({"q": "nitrofurantoin cystitis"}, {"q": {"d2": 1}})
    credited = evaluate(task, doc_search(searcher, "bm25"), "bm25")
    missed = evaluate(task, doc_search(searcher, "bm25", credit_duplicates=False), "bm25")
    assert credited.ndcg_at_10 == pytest.approx(1.0) and credited.mrr_at_10 == 1.0
    assert missed.ndcg_at_10 == 0.0 and missed.recall_at_100 == 0.0


def test_group_metrics_by_hand() -> None:
    ranked = [("a", "b"), ("c",), ("b", "d")]
    qrels = {"b": 2, "d": 1, "a": 1}
    # rank 1 gains b (2, the best of a and b); rank 3 gains d (b is already credited)
    dcg = 2 / math.log2(2) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, qrels) == pytest.approx(dcg / idcg)
    assert recall_at_k(ranked, qrels, 1) == pytest.approx(2 / 3)
    assert mrr_at_k([("x",), ("y", "d")], qrels) == 0.5
    assert unique_groups(["a", ("a", "b"), ("b",), "c"]) == [("a",), ("b",), ("c",)]
    assert ndcg_at_k([("b", "d", "a")] * 3, qrels) <= 1.0


def test_search_reranks_only_when_asked_and_only_the_head(index: Path) -> None:
    reranker = CountingReranker()
    searcher = Searcher.load(index, EMBEDDER, RetrievalSettings(rerank_depth=2, rerank_each=0), reranker=reranker)
    plain = searcher.search("cystitis treatment", k=4, mode="bm25")
    assert reranker.calls == []
    reranked = searcher.search("cystitis treatment", k=4, mode="bm25", rerank=True)
    assert reranker.calls == [2]
    assert [e.chunk.chunk_id for e in reranked[:2]] == [e.chunk.chunk_id for e in reversed(plain[:2])]
    assert [e.chunk.chunk_id for e in reranked[2:]] == [e.chunk.chunk_id for e in plain[2:]]
    one = searcher.search("cystitis treatment", k=1, mode="bm25", rerank=True)
    assert reranker.calls[-1] == 2 and len(one) == 1


def test_each_retrievers_best_candidates_join_the_reranked_pool() -> None:
    # b is BM25's first but fusion put it fourth (dense never found it): with rerank_each=1 the reranker reads it.
    fused = [
        Fused("a", 0.9, {"bm25": 2, "dense": 1}),
        Fused("c", 0.8, {"bm25": 3, "dense": 2}),
        Fused("d", 0.7, {"dense": 3}),
        Fused("b", 0.3, {"bm25": 1}),
        Fused("e", 0.2, {"bm25": 4}),
    ]
    head, rest = rerank_pool(fused, 2, 1)
    assert [f.key for f in head] == ["a", "c", "b"] and [f.key for f in rest] == ["d", "e"]
    head, rest = rerank_pool(fused, 2, 0)  # off: the fused head only, as before
    assert [f.key for f in head] == ["a", "c"] and [f.key for f in rest] == ["d", "b", "e"]
    assert rerank_pool(fused, 10, 3) == (fused, [])


def test_search_reranks_a_retrievers_first_hit_that_fusion_put_below_the_head(index: Path) -> None:
    reranker = CountingReranker()
    settings = RetrievalSettings(rerank_depth=1, rerank_each=1, weights={"bm25": 0.01, "dense": 1.0})
    searcher = Searcher.load(index, EMBEDDER, settings, reranker=reranker)
    fused = searcher.search("nitrofurantoin", k=4)
    bm25_first = searcher.search("nitrofurantoin", k=1, mode="bm25")[0].chunk.chunk_id
    assert fused[0].chunk.chunk_id != bm25_first  # the hashed dense side decides the fused order
    reranked = searcher.search("nitrofurantoin", k=4, rerank=True)
    assert reranker.calls == [2]  # the fused first, and BM25's first from below it
    assert bm25_first in {e.chunk.chunk_id for e in reranked[:2]}
    assert sorted(e.chunk.chunk_id for e in reranked) == sorted(e.chunk.chunk_id for e in fused)


def test_rerank_with_orders_by_score_and_records_the_hit(index: Path) -> None:
    searcher = Searcher.load(index, EMBEDDER)
    evidence = searcher.search("blood pressure", k=4, mode="bm25")
    out = rerank_with(LexicalReranker(), "thiazide diuretics blood pressure", evidence)
    assert out[0].chunk.doc_id == "d5" and out[0].retrievers["rerank"].rank == 1
    assert out[0].score == out[0].retrievers["rerank"].score == 1.0
    assert "bm25" in out[0].retrievers
    assert rerank_with(LexicalReranker(), "anything", []) == []


def test_missing_reranker_is_a_clear_error(index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    searcher = Searcher.load(index, EMBEDDER, RetrievalSettings(reranker=str(tmp_path / "nowhere")))
    assert searcher.search("cystitis", k=1)  # a plain search loads nothing
    with pytest.raises(ConfigError, match="train"):
        searcher.search("cystitis", k=1, rerank=True)
    monkeypatch.setattr("rag.retrieval.rerank.packaged_reranker_path", lambda: tmp_path / "uninstalled")
    with pytest.raises(ConfigError, match="packaged reranker is missing"):
        Searcher.load(index, EMBEDDER).search("cystitis", k=1, rerank=True)


def test_packaged_reranker_loads_with_its_learnt_prior() -> None:
    reranker = load_reranker("default")
    assert reranker.model.config.rank_prior > 0 and reranker.model.config.labels == RELEVANCE_LABELS
    assert (packaged_reranker_path() / "weights.safetensors").stat().st_size <= 10_000_000
    question = "What are the treatments for cystitis ?"
    scores = reranker.score([(question, f"Cystitis > Treatment\n{TREAT}"), (question, "Asthma > Symptoms\nWheeze.")])
    assert scores[0] > scores[1]


def test_bfloat16_reranking_keeps_the_float32_order() -> None:
    exact = load_reranker("default", dtype="float32")
    fast = load_reranker("default", dtype="bfloat16")
    assert not exact.bf16 and fast.bf16
    question = "What are the treatments for cystitis ?"
    passages = [
        f"Cystitis > Treatment\n{TREAT}",
        "Cystitis > Symptoms\nCystitis causes burning on urination and frequent urge to pass urine.",
        "Asthma > Treatment\nInhaled budesonide-formoterol relieves asthma symptoms as needed.",
        "Hypertension > Treatment\nThiazide diuretics lower blood pressure in adults.",
    ]
    pairs = [(question, p) for p in passages]
    a, b = exact.model.margins(pairs), fast.model.margins(pairs, bf16=True)
    assert list(a.argsort()) == list(b.argsort())
    assert abs(a - b).max() < 0.5 and not (a == b).all()  # rounded arithmetic, not the float32 path again


def test_native_bf16_reads_the_cpu_flags() -> None:
    assert native_bf16("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert native_bf16("processor : 0\nFeatures : fp asimd sve bf16 i8mm\n")
    assert not native_bf16("processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw\n")
    assert not native_bf16("model name : avx512_bf16 in a name is not a flag\n")
    assert not native_bf16("")


def test_rerank_dtype_is_checked() -> None:
    assert RetrievalSettings().rerank_dtype == "auto"
    with pytest.raises(ValueError, match="rerank_dtype"):
        RetrievalSettings(rerank_dtype="int8")  # type: ignore[arg-type]


def test_cross_encoder_reranker_defined_scores_on_bad_input(tiny_base: Path, tmp_path: Path) -> None:
    model = CrossEncoder.new(CrossEncoderConfig(labels=RELEVANCE_LABELS, base_model=str(tiny_base), max_length=64))
    folder = model.save(tmp_path / "reranker")
    reranker = CrossEncoderReranker.load(folder)
    pairs = [("", ""), ("cystitis", "x" * 50_000), ("cystitis", "Zystitis wird mit Nitrofurantoin behandelt."),
             ("a\x00b\x1f", "# Heading only"), ("q", "ok")]  # fmt: skip
    scores = reranker.score(pairs)
    assert len(scores) == 5 and all(0.0 <= s <= 1.0 for s in scores)
    wrong = CrossEncoder.new(CrossEncoderConfig(labels=("a", "b", "c"), base_model=str(tiny_base), max_length=64))
    wrong.save(tmp_path / "wrong")
    with pytest.raises(ConfigError, match="train reranker"):
        CrossEncoderReranker.load(tmp_path / "wrong")


def test_consumer_phrasing_keeps_the_focus() -> None:
    rng = random.Random(0)
    query = RerankQuery("q", "What are the treatments for Zollinger-Ellison Syndrome ?", "treatment")
    for _ in range(10):
        text = consumer_phrasing(query, rng)
        assert "zollinger-ellison syndrome" in text.lower() and "What are the treatments" not in text
    untyped = RerankQuery("q", "Something else entirely?", "support groups")
    assert consumer_phrasing(untyped, rng) == untyped.text


def test_split_never_uses_the_reported_queries() -> None:
    queries = {f"q{i}": RerankQuery(f"q{i}", f"question {i}", "treatment") for i in range(20)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20) if i != 5}
    train, held = split_queries(queries, qrels, offset=4, limit=100, validation=3)
    assert [q.query_id for q in held] == ["q17", "q18", "q19"]
    assert [q.query_id for q in train][:2] == ["q4", "q6"] and len(train) == 12
    with pytest.raises(ConfigError, match="lower --offset"):
        split_queries(queries, qrels, offset=18, limit=5, validation=3)


def test_mining_groups_the_judged_passage_with_near_misses(index: Path) -> None:
    searcher = Searcher.load(index, EMBEDDER)
    assert first_chunk_of(searcher)["d2"].doc_id == "d1"  # a collapsed document's text lives in d1's chunk
    queries = [RerankQuery("q1", "What are the treatments for bladder infection ?", "treatment")]
    groups, stats = mine_groups(searcher, queries, {"q1": {"d2": 1}}, negatives=2, paraphrase_share=0.0,
                                heading_dropout=0.0, progress=False)  # fmt: skip
    passages, sentences = groups
    assert passages.query == queries[0].text and TREAT in passages.passages[0]
    assert len(passages.passages) == 3 and all(TREAT not in p for p in passages.passages[1:])
    found = [e.chunk.indexed_text for e in searcher.search(queries[0].text, k=30, rerank=False)]
    assert [found.index(p) for p in passages.passages] == list(passages.ranks)  # each passage's fused rank
    assert sentences.ranks == (None,) * len(sentences.passages) and sentences.passages[0] in f"Treatment: {TREAT}"
    assert stats["queries"] == 1 and stats["sentence_groups"] == 1 and stats["groups"] == 2


@pytest.mark.slow
def test_train_reranker_command_writes_a_loadable_model(tiny_base: Path, tmp_path: Path) -> None:
    from rag.cli.main import main

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, _, x) in DOCS.items())
    )
    questions = ["What are the treatments for Cystitis ?", "What are the symptoms of Cystitis ?",
                 "What are the treatments for Asthma ?", "What are the treatments for Hypertension ?"]  # fmt: skip
    qtypes = ["treatment", "symptoms", "treatment", "treatment"]
    (beir / "queries.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"q{i}", "text": q, "metadata": {"qtype": t}}) + "\n"
            for i, (q, t) in enumerate(zip(questions, qtypes, strict=True))
        )
    )
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\nq1\td3\t1\nq2\td4\t1\nq3\td5\t1\n")
    settings = IndexSettings.model_validate({"cache_dir": str(tmp_path / "cache")})
    build_index([beir / "corpus.jsonl"], tmp_path / "index", settings, progress=False)
    out = tmp_path / "model"
    args = ["train", "reranker", "--out", str(out), "--corpus", str(beir), "--index", str(tmp_path / "index"),
            "--offset", "1", "--validation", "1", "--negatives", "2", "--max-steps", "2", "--batch-size", "1",
            "--base", str(tiny_base), "--quiet", "--json"]  # fmt: skip
    assert main(args) == 0
    card = json.loads((out / "training_card.json").read_text())
    assert card["data"]["train_queries"] == {"count": 2, "first": "q1", "last": "q2"}
    assert card["training"]["steps"] == 2 and {"hybrid", "hybrid+rerank"} <= set(card["metrics"]["validation"])
    reranker = CrossEncoderReranker.load(out)
    assert len(reranker.score([("cystitis", TREAT)])) == 1
    assert main(["train", "reranker", "--out", str(out), "--corpus", str(beir), "--offset", "9"]) == 2
