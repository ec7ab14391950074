"""The engine with a three-way support checker: contradictions always removed, verdicts per cited passage, one
batched judgement per answer, and how the configured checker is loaded (or refused)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from rag.answering.engine import Engine
from rag.checking.support import LexicalSupportChecker, SupportChecker
from rag.checking.verifier import load_support_checker
from rag.core.config import Settings, with_overrides
from rag.core.errors import ConfigError
from rag.evaluation.qa.scoring import kqa_counts
from rag.models.generators.base import ChatMessage
from rag.testing import LexicalReranker, ScriptedGenerator, ScriptedJudge
from tests.answering.test_engine import EMBEDDER, key_of
from tests.answering.test_engine import index as index  # the module-scoped index fixture, re-used

JUDGE_CUES = {"never": "refutes", "nitrofurantoin": "supports", "fosfomycin": "supports"}


def engine_with(index: Path, reply: str, judge: ScriptedJudge, **overrides: object) -> Engine:
    settings = with_overrides(Settings(), {"answer.min_evidence_score": -1.0, **overrides})

    def scripted(m: Sequence[ChatMessage]) -> str:
        return reply.format(nitro=key_of(m, "nitro"), fosfo=key_of(m, "fosfomycin"))

    return Engine.load(
        index, ScriptedGenerator(scripted), settings, embedder=EMBEDDER, checker=judge, reranker=LexicalReranker()
    )


REPLY = (
    "SUGGESTIONS:\n1. Nitrofurantoin for five days treats cystitis. [{nitro}]\n"
    "2. Fosfomycin must never be used for cystitis. [{fosfo}]\n"
    "3. Fosfomycin as a single dose is an alternative. [{fosfo}][{nitro}]"
)


def test_contradicted_suggestion_is_removed_even_when_unsupported_ones_are_kept(index: Path) -> None:
    judge = ScriptedJudge(JUDGE_CUES)
    answer = engine_with(index, REPLY, judge, **{"answer.remove_unsupported": False}).ask("cystitis treatment")
    assert [s.text.split()[0] for s in answer.suggestions] == ["Nitrofurantoin", "Fosfomycin"]
    (contradicted,) = answer.removed_suggestions
    assert contradicted.label == "refutes" and not contradicted.supported
    assert any(f.kind == "contradicted" for f in contradicted.flags)
    assert len(judge.calls) == 1 and len(judge.calls[0]) == 4  # one batch: every (suggestion, cited passage) pair
    data = json.loads(json.dumps(answer.to_dict()))
    verdicts = data["suggestions"][1]["evidence_verdicts"]
    assert set(verdicts) == set(data["suggestions"][1]["citations"]) and len(verdicts) == 2
    assert verdicts[next(iter(verdicts))]["probabilities"]["supports"] == 0.9
    assert data["removed_suggestions"][0]["label"] == "refutes"
    assert "contradicted by it" in answer.to_markdown()


def test_neutral_is_unsupported_and_removed_by_default(index: Path) -> None:
    judge = ScriptedJudge({}, default="neutral")
    reply = "SUGGESTIONS:\n1. Cranberry juice cures cystitis. [{nitro}]"
    answer = engine_with(index, reply, judge, **{"answer.fallback_to_extractive": False}).ask("cystitis treatment")
    assert answer.abstained and answer.removed_suggestions[0].label == "neutral"
    assert any(f.kind == "unsupported" for f in answer.removed_suggestions[0].flags)


def test_support_threshold_overrides_the_label_but_never_a_contradiction(index: Path) -> None:
    judge = ScriptedJudge(JUDGE_CUES)
    answer = engine_with(index, REPLY, judge, **{"answer.support_threshold": 0.95}).ask("cystitis treatment")
    assert not answer.suggestions  # 0.9 < 0.95: nothing supported; the contradiction is removed as well
    assert {s.label for s in answer.removed_suggestions} >= {"refutes", "supports"}


def test_load_support_checker_choices(tmp_path: Path) -> None:
    calibrated = load_support_checker(Settings().answer.model_copy(update={"support_checker": "calibrated"}), EMBEDDER)
    assert isinstance(calibrated, LexicalSupportChecker)  # the hash embedder has no fitted calibration
    missing = Settings().answer.model_copy(update={"support_checker": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="support_fallback"):
        load_support_checker(missing)
    with pytest.warns(UserWarning, match="calibrated"):
        fallback = load_support_checker(missing.model_copy(update={"support_fallback": True}))
    assert isinstance(fallback, LexicalSupportChecker) and not isinstance(fallback, SupportChecker)


def test_kqa_counts_use_the_checkers_contradiction() -> None:
    judge = ScriptedJudge({"never": "refutes", "ssri": "supports"})
    counts = kqa_counts("Escitalopram is an SSRI.", ["It is an SSRI", "It is never addictive"], ["Other"], judge)
    assert (counts.must_have, counts.supported, counts.statements, counts.contradicted) == (2, 1, 3, 1)
    assert kqa_counts("", ["It is an SSRI"], [], judge).supported == 0
