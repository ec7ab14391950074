"""The cross-encoder and the trained support checker, on a tiny randomly initialised BERT (no real weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.checking.verdict import LABELS
from rag.checking.verifier import NLIVerifier
from rag.core.errors import ConfigError
from rag.models.crossencoder import CONFIG_NAME, WEIGHTS_NAME, CrossEncoder, CrossEncoderConfig, read_artefact
from rag.training.crossencoder import (
    LabelledPair,
    TrainConfig,
    _steps_within,
    class_weights,
    length_batches,
    train_cross_encoder,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def toy_pairs(n: int) -> list[LabelledPair]:
    """Learnable in a few steps: the label is which marker word the claim holds."""
    words = ["aspirin", "never", "weather"]
    return [LabelledPair(f"passage number {i} about treatment", f"claim {words[i % 3]} {i}", i % 3) for i in range(n)]


def test_training_lowers_the_loss_and_the_artefact_round_trips(tiny_base: Path, tmp_path: Path) -> None:
    model = CrossEncoder.new(CrossEncoderConfig(labels=LABELS, base_model=str(tiny_base), max_length=64, lora_rank=4))
    examples = toy_pairs(96)
    config = TrainConfig(epochs=8, batch_size=8, lr=5e-3, label_smoothing=0.0, warmup_share=0.05, seed=1)
    result = train_cross_encoder(model, examples, config, progress=False)
    assert result.steps == 96 and len(result.losses) >= 3
    assert result.losses[-1] < 0.6 * result.losses[0]
    pairs = [(e.first, e.second) for e in examples[:12]]
    before = model.predict(pairs)
    assert before.shape == (12, 3) and np.allclose(before.sum(axis=1), 1.0)
    assert (before.argmax(axis=1) == [e.label for e in examples[:12]]).mean() >= 0.75
    folder = model.save(tmp_path / "artefact")
    assert (folder / WEIGHTS_NAME).stat().st_size < 200_000  # only LoRA and the head are saved
    loaded = CrossEncoder.load(folder)
    assert np.abs(loaded.predict(pairs) - before).max() < 2e-2  # fp16 storage, LoRA merged


def test_time_limit_stops_training_and_keeps_the_model(tiny_base: Path) -> None:
    model = CrossEncoder.new(CrossEncoderConfig(labels=LABELS, base_model=str(tiny_base), max_length=32, lora_rank=2))
    result = train_cross_encoder(model, toy_pairs(40), TrainConfig(epochs=50, batch_size=4, time_limit_s=0.0),
                                 progress=False)  # fmt: skip
    assert result.stopped_early is not None and result.steps == 0
    assert model.predict([("a", "b")]).shape == (1, 3)


def test_cls_pooling_learns_and_round_trips(tiny_base: Path, tmp_path: Path) -> None:
    config = CrossEncoderConfig(labels=LABELS, base_model=str(tiny_base), max_length=64, lora_rank=4, pooling="cls")
    model = CrossEncoder.new(config)
    examples = toy_pairs(96)
    train = TrainConfig(epochs=8, batch_size=8, lr=5e-3, label_smoothing=0.0, warmup_share=0.05, seed=1)
    result = train_cross_encoder(model, examples, train, progress=False)
    assert result.losses[-1] < 0.6 * result.losses[0]
    pairs = [(e.first, e.second) for e in examples[:12]]
    loaded = CrossEncoder.load(model.save(tmp_path / "cls"))
    assert loaded.config.pooling == "cls"
    assert np.allclose(loaded.predict(pairs), model.predict(pairs), atol=2e-2)  # fp16 weights on disk
    meta = json.loads((tmp_path / "cls" / CONFIG_NAME).read_text())
    (tmp_path / "cls" / CONFIG_NAME).write_text(json.dumps({**meta, "pooling": "max"}))
    with pytest.raises(ConfigError, match="unknown pooling"):
        read_artefact(tmp_path / "cls")


def test_schedule_is_fitted_to_the_time_limit() -> None:
    # 40 steps took 80 s: a 1,000 s limit fits 475 of 1,442 steps (5% spare); a generous limit changes nothing.
    assert _steps_within(1000.0, 80.0, 40, 1442) == 475
    assert _steps_within(10_000.0, 80.0, 40, 1442) == 1442
    assert _steps_within(1.0, 80.0, 40, 1442) == 41  # never fewer than the steps already taken


def test_class_weights_and_length_batches() -> None:
    weights = class_weights([0, 0, 0, 0, 1], 3)
    assert weights[1] == pytest.approx(2 * weights[0]) and weights[2] == 1.0
    assert sum(weights[label] for label in [0, 0, 0, 0, 1]) / 5 == pytest.approx(1.0)
    import random

    batches = length_batches(list(range(100)), 10, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(100)) and all(len(b) == 10 for b in batches)
    assert all(max(b) - min(b) <= 99 for b in batches)


@pytest.fixture()
def artefact(tiny_base: Path, tmp_path: Path) -> Path:
    model = CrossEncoder.new(CrossEncoderConfig(labels=LABELS, base_model=str(tiny_base), max_length=64, lora_rank=2))
    return model.save(tmp_path / "verifier")


def test_corrupt_or_missing_artefact_is_a_clear_error(artefact: Path, tmp_path: Path) -> None:
    read_artefact(artefact)
    broken = tmp_path / "broken"
    shutil.copytree(artefact, broken)
    data = bytearray((broken / WEIGHTS_NAME).read_bytes())
    data[-5] ^= 0xFF
    (broken / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        CrossEncoder.load(broken)
    (broken / WEIGHTS_NAME).unlink()
    with pytest.raises(ConfigError, match="weights are missing"):
        read_artefact(broken)
    with pytest.raises(ConfigError, match="cannot read the cross-encoder config"):
        read_artefact(tmp_path / "nowhere")
    (broken / CONFIG_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_artefact(broken)
    (broken / CONFIG_NAME).write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="not a clinrag-cross-encoder"):
        read_artefact(broken)


def test_verifier_windows_and_bad_input(artefact: Path) -> None:
    verifier = NLIVerifier.load(artefact)
    short = verifier.windows("aspirin helps", "Aspirin helps. It is cheap.")
    assert short == ["Aspirin helps. It is cheap."]
    long_passage = " ".join(f"Sentence {i} talks about topic {i} at some length here." for i in range(200))
    windows = verifier.windows("topic 150 matters", long_passage)
    assert 1 < len(windows) <= verifier.max_windows
    assert any("topic 150" in w for w in windows[:2])  # the windows sharing the claim's words come first
    pairs = [
        ("", "Aspirin helps."),  # empty claim
        ("[1]", "Aspirin helps."),  # only a citation marker
        ("Aspirin helps.", ""),  # empty evidence
        ("x" * 100_000, "Aspirin helps."),  # 100 kB claim
        ("Aspirin\x00 helps\x07.", "Aspirin\x1b helps."),  # control characters
        ("L'aspirine soulage la douleur.", "Aspirin lindert Schmerzen."),  # other languages
        ("topic 150 matters", long_passage),
    ]
    verdicts = verifier.judge(pairs)
    assert len(verdicts) == len(pairs)
    assert [v.label for v in verdicts[:3]] == ["neutral"] * 3 and verdicts[0].probabilities == (0.0, 0.0, 1.0)
    for v in verdicts[3:]:
        assert v.label in LABELS and sum(v.probabilities) == pytest.approx(1.0, abs=1e-4) and v.window
    assert verifier.score([("a b", "a b")]).shape == (1,)
    assert verifier.judge([]) == []


def test_verifier_refuses_a_model_with_other_labels(tiny_base: Path) -> None:
    model = CrossEncoder.new(CrossEncoderConfig(labels=("relevant", "irrelevant"), base_model=str(tiny_base)))
    with pytest.raises(ConfigError, match="labels"):
        NLIVerifier(model)


def test_quoted_claims_are_supported_by_rule(artefact: Path) -> None:
    from rag.checking.verifier import quoted_in

    passage = "Background.\n- Nitrofurantoin 100 mg twice daily for 5 days.\nIt is not true that garlic cures cystitis."
    assert quoted_in("nitrofurantoin 100 mg, twice daily for 5 days", passage) == (
        "- Nitrofurantoin 100 mg twice daily for 5 days."
    )
    assert quoted_in("Garlic cures cystitis.", passage) == ""  # right after a negation
    assert quoted_in("twice daily", passage) == ""  # too short to be a claim
    # A negation closing the sentence before is not this sentence's: "... need no treatment. For others, ..."
    mmn = "Some people need no treatment. For others, treatment consists of IVIg. It is not known why."
    assert quoted_in("For others, treatment consists of IVIg.", mmn) == "For others, treatment consists of IVIg."
    assert quoted_in("known why", mmn, min_words=2) == ""
    verifier = NLIVerifier.load(artefact)
    (verdict,) = verifier.judge([("Nitrofurantoin 100 mg twice daily for 5 days. [E1]", passage)])
    assert verdict.label == "supports" and verdict.basis == "quote" and verdict.support == 1.0
    verifier.quote_rule = False
    assert verifier.judge([("Nitrofurantoin 100 mg twice daily for 5 days.", passage)])[0].basis == "model"
