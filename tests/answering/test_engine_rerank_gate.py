"""Which order chooses an answer's passages: the reranker's, or the fused one where the reranker is unsure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from indexer import build_index
from rag.answering.engine import Engine
from rag.answering.evidence_policy import RERANKED, reranker_unsure
from rag.answering.extractive import rank_shares
from rag.checking.support import LexicalSupportChecker
from rag.core.config import IndexSettings, Settings, with_overrides
from rag.core.types import Chunk, DocumentMeta, Evidence, RetrieverHit
from rag.retrieval.rerank import rerank_with
from rag.retrieval.search import Searcher
from rag.testing import HashEmbedder, LexicalReranker, ScriptedGenerator
from rag.text.tokenize import content_word_share

TEXTS = {
    "a": "Nitrofurantoin for five days treats uncomplicated cystitis in women.",
    "b": "Fosfomycin treats cystitis as a single dose.",
    "c": "Cystitis causes burning on urination.",
}
QUESTION = "Which drug treats uncomplicated cystitis in women for five days?"


class ScaledReranker:
    """The lexical fake with every rating multiplied by `scale`: a reranker as unsure as `scale` makes it."""

    name = "scaled"

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self.scale * s for s in LexicalReranker().score(pairs)]

    def rerank(self, query: str, evidence: list[Evidence]) -> list[Evidence]:
        return rerank_with(self, query, evidence)


def rated(scores: list[float]) -> list[Evidence]:
    meta = DocumentMeta(title="T", doc_type="guideline", source="test")
    return [
        Evidence(
            Chunk(f"c{i}", f"d{i}", "text", "", (), 0, 4, None, None, 1, f"h{i}"),
            meta,
            s,
            {"fused": RetrieverHit(i + 1, 0.5), "rerank": RetrieverHit(i + 1, s)},
        )
        for i, s in enumerate(scores)
    ]


def test_the_reranker_is_unsure_only_when_it_rates_every_passage_below_the_floor() -> None:
    assert reranker_unsure(rated([0.05, 0.02]), 0.1) == "the reranker is unsure of every passage (best 0.050 < 0.1)"
    assert reranker_unsure(rated([0.05, 0.4]), 0.1) is None
    assert reranker_unsure(rated([0.05]), 0.0) is None  # 0 turns the gate off
    assert reranker_unsure([], 0.1) is None  # nothing reranked: nothing to be unsure of


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    src = root / "src"
    src.mkdir()
    for name, text in TEXTS.items():
        (src / f"{name}.md").write_text(f"---\ntitle: {name}\ntype: guideline\n---\n{text}\n", encoding="utf-8")
    settings = IndexSettings.model_validate({"cache_dir": str(root / "cache")})
    build_index([src], root / "index", settings, embedder=HashEmbedder(dim=32, max_tokens=96))
    return root / "index"


def engine(index: Path, scale: float, **answer: object) -> Engine:
    over = {"generator.kind": "extractive", "answer.min_evidence_score": -1.0, "answer.evidence_k": 2}
    return Engine.load(
        index,
        settings=with_overrides(Settings(), over | {f"answer.{k}": v for k, v in answer.items()}),
        embedder=HashEmbedder(dim=32, max_tokens=96),
        checker=LexicalSupportChecker(),
        reranker=ScaledReranker(scale),
    )


def test_a_sure_reranker_chooses_the_passages(index: Path) -> None:
    answer = engine(index, 1.0).ask(QUESTION)
    assert answer.ranking == RERANKED and answer.to_dict()["ranking"] == RERANKED
    # The reranker rates "b" far below "a": the extractive answer quotes "a" alone.
    assert [r.doc_id for r in answer.references if r.cited] == ["a"]


def test_an_unsure_reranker_leaves_the_choice_to_the_fused_order(index: Path) -> None:
    unsure = engine(index, 0.01)
    answer = unsure.ask(QUESTION)
    assert answer.ranking.startswith("fused: the reranker is unsure of every passage (best 0.0")
    fused = [e.chunk.chunk_id for e in Searcher.load(index, HashEmbedder(dim=32, max_tokens=96)).search(QUESTION, k=2)]
    assert [r.chunk_id for r in answer.references] == fused
    # Still answered, from the fused passages, each sentence citing its own passage.
    assert {(s.text.split()[0], s.citations) for s in answer.suggestions} == {
        ("Nitrofurantoin", ("E1",)),
        ("Fosfomycin", ("E2",)),
    }
    # The same unsure reranker is obeyed when the gate is off.
    assert engine(index, 0.01, rerank_min_confidence=0.0).ask(QUESTION).ranking == RERANKED
    assert engine(index, 1.0, rerank=False).ask(QUESTION).ranking == "fused: reranking is off"


def test_a_model_generator_is_shown_the_reranked_passages_however_unsure(index: Path) -> None:
    over = {"answer.min_evidence_score": -1.0, "answer.evidence_k": 2}
    model = Engine.load(
        index,
        ScriptedGenerator(lambda m: "INSUFFICIENT EVIDENCE"),
        with_overrides(Settings(), over),
        embedder=HashEmbedder(dim=32, max_tokens=96),
        checker=LexicalSupportChecker(),
        reranker=ScaledReranker(0.01),
    )
    assert model.ask(QUESTION).ranking == RERANKED


def test_sentences_are_rated_by_their_rank_under_each_signal() -> None:
    assert rank_shares([0.5, 0.5, 0.1, 0.9]).tolist() == [0.5, 0.5, 0.0, 1.0]  # ties share their mean rank
    assert rank_shares([3.0]).tolist() == [1.0] and rank_shares([]).tolist() == []
    # Content words only: "what", "is", "the", "for" do not make a sentence an answer.
    assert content_word_share("Prednisone 40 mg for a COPD flare", "What is the dose of prednisone for COPD?") == 2 / 3
    assert content_word_share("anything", "What is the?") == 0.0
