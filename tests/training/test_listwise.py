"""Listwise reranker training on a tiny randomly initialised BERT: the loss, the learnt rank prior, the scores."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rag.core.types import Chunk, DocumentMeta, Evidence
from rag.models.crossencoder import CrossEncoder, CrossEncoderConfig, rank_feature
from rag.retrieval.rerank import RELEVANCE_LABELS, CrossEncoderReranker
from rag.training.crossencoder import TrainConfig
from rag.training.listwise import RankGroup, train_listwise

pytest.importorskip("torch")


def marker_groups(n: int, seed: int = 0) -> list[RankGroup]:
    """The positive holds the word "aspirin"; its fused rank is random, so only reading the text helps."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ranks = rng.sample(range(10), 4)
        passages = (f"passage {i} aspirin helps", *(f"passage {i + j} weather report" for j in range(1, 4)))
        out.append(RankGroup(f"question {i}", passages, tuple(ranks)))
    return out


def new_model(tiny_base: Path) -> CrossEncoder:
    config = CrossEncoderConfig(labels=RELEVANCE_LABELS, base_model=str(tiny_base), max_length=32, lora_rank=4)
    return CrossEncoder.new(config, seed=3)


def test_listwise_training_learns_to_put_the_positive_first(tiny_base: Path, tmp_path: Path) -> None:
    model = new_model(tiny_base)
    groups = marker_groups(64)
    config = TrainConfig(epochs=6, batch_size=4, lr=5e-3, warmup_share=0.05, seed=1)
    result = train_listwise(model, groups, config, learn_prior=False, progress=False)
    assert result.steps == 96 and result.losses[-1] < 0.5 * result.losses[0]  # chance is ln 4 = 1.39
    margins = model.margins([(g.query, p) for g in groups[:16] for p in g.passages]).reshape(16, 4)
    assert (margins.argmax(axis=1) == 0).mean() >= 0.9
    assert model.config.rank_prior == 0.0
    loaded = CrossEncoderReranker.load(model.save(tmp_path / "reranker"))
    assert loaded.score([(groups[0].query, groups[0].passages[0])])[0] > 0.5


def test_the_prior_is_learnt_when_the_fused_order_is_right(tiny_base: Path) -> None:
    model = new_model(tiny_base)
    # The texts tell nothing apart; the positive is always ranked first: only the prior can lower the loss.
    groups = [RankGroup(f"q{i}", ("same text",) * 4, (0, 1, 2, 3)) for i in range(32)]
    train_listwise(model, groups, TrainConfig(epochs=4, batch_size=4, lr=1e-3, seed=1), progress=False)
    assert model.config.rank_prior > 1.1  # from 1.0: only the prior can lower the loss here


def test_reranker_adds_the_prior_to_the_margin(tiny_base: Path) -> None:
    model = new_model(tiny_base)
    chunks = [Chunk(f"c{i}", f"d{i}", "same text", "", (), 0, 9, None, None, 4, f"h{i}") for i in range(3)]
    meta = DocumentMeta(title="T", doc_type="guideline", source="test")
    evidence = [Evidence(c, meta, 1.0 - i / 10) for i, c in enumerate(chunks)]
    flat = CrossEncoderReranker(model).rerank("question", evidence)
    scores = [e.score for e in flat]
    assert np.allclose(scores, scores[0])  # identical pairs, no prior: ties keep the fused order
    assert [e.chunk.chunk_id for e in flat] == ["c0", "c1", "c2"]
    model.config = replace(model.config, rank_prior=2.0)
    with_prior = CrossEncoderReranker(model).rerank("question", list(reversed(evidence)))
    assert [e.chunk.chunk_id for e in with_prior] == ["c2", "c1", "c0"]  # the given (fused) order is the prior
    assert with_prior[0].score > with_prior[1].score > with_prior[2].score
    assert rank_feature(0) == rank_feature(None) == 0.0 and rank_feature(3) < rank_feature(1) < 0


def test_rank_group_needs_a_negative_and_one_rank_per_passage() -> None:
    with pytest.raises(ValueError, match="at least one negative"):
        RankGroup("q", ("only the positive",), (0,))
    with pytest.raises(ValueError, match="one rank per passage"):
        RankGroup("q", ("a", "b"), (0,))
