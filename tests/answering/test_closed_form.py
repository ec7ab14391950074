"""Closed-form scoring: label likelihood argmax, per-label biases, PubMedQA prompts and metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from rag.answering.closed_form import (
    MCQ_LABELS,
    PUBMEDQA_LABELS,
    PubMedQAItem,
    accuracy,
    fit_biases,
    gold_evidence,
    label_reply,
    load_pubmedqa,
    macro_f1,
    mcq_question,
    parse_conclusion,
    parse_decision,
    pubmedqa_prompt,
    score_choices,
)
from rag.answering.prompts import load_template, render
from rag.core.errors import ConfigError
from rag.models.generators import ChatMessage
from rag.testing import ScriptedGenerator

CHAT = (ChatMessage("user", "Does aspirin prevent stroke?"),)


def words(text: str) -> int:
    return len(text.split())


def item(decision: str = "no", results: str = "Stroke rates did not differ (p = 0.4).") -> PubMedQAItem:
    return PubMedQAItem(
        pmid="123",
        question="Does aspirin prevent stroke?",
        contexts=("Aspirin is widely used. " * 5, "A cohort of 200 adults.", results),
        sections=("BACKGROUND", "METHODS", "RESULTS"),
        year="2010",
        decision=decision,
        long_answer="Aspirin did not prevent stroke.",
    )


def test_score_choices_takes_the_argmax_and_applies_bias() -> None:
    gen = ScriptedGenerator([], label_scores={"ANSWER: yes": -1.0, "ANSWER: no": -2.0, "ANSWER: maybe": -3.0})
    scores = score_choices(gen, CHAT, PUBMEDQA_LABELS)
    assert scores.choice == "yes" and scores.index == 0
    assert scores.loglik == (-1.0, -2.0, -3.0) and scores.adjusted == scores.loglik
    shifted = score_choices(gen, CHAT, PUBMEDQA_LABELS, bias={"no": 1.5})
    assert shifted.choice == "no" and shifted.adjusted == (-1.0, -0.5, -3.0)
    assert score_choices(gen, CHAT, PUBMEDQA_LABELS, bias=[0.0, 0.0, 2.5]).choice == "maybe"
    with pytest.raises(ValueError, match="one bias per label"):
        score_choices(gen, CHAT, PUBMEDQA_LABELS, bias=[1.0])


def test_score_choices_asks_for_answer_lines() -> None:
    asked: list[Sequence[str]] = []

    def script(messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        asked.append(labels)
        return [-float(i) for i in range(len(labels))]

    gen = ScriptedGenerator([], label_scores=script)
    assert score_choices(gen, CHAT, MCQ_LABELS[:4]).choice == "A"
    assert list(asked[0]) == [label_reply(x) for x in "ABCD"] == ["ANSWER: A", "ANSWER: B", "ANSWER: C", "ANSWER: D"]


def test_fit_biases_undoes_a_label_prior() -> None:
    # The model always prefers "yes" by 2 nats, but the second-best label carries the signal.
    rows, gold = [], []
    for truth in [0, 1, 1, 2, 1, 0, 1, 2, 1, 1]:
        row = [0.0, -2.6, -2.6]
        row[truth] += 1.0 if truth == 0 else 1.5
        rows.append(row)
        gold.append(truth)
    raw = [max(range(3), key=lambda i: r[i]) for r in rows]
    assert sum(p == g for p, g in zip(raw, gold, strict=True)) == 2
    bias = fit_biases(rows, gold)
    assert bias[0] == 0.0
    fitted = [max(range(3), key=lambda i: r[i] + bias[i]) for r in rows]
    assert fitted == gold
    nll = fit_biases(rows, gold, objective="nll")
    assert nll[0] == 0.0 and nll[1] > 1.0  # pulls "no" up towards its frequency
    f1 = fit_biases(rows, gold, objective="macro_f1")
    assert [max(range(3), key=lambda i: r[i] + f1[i]) for r in rows] == gold


def test_fit_biases_prefers_small_offsets_and_checks_shapes() -> None:
    assert fit_biases([[0.0, -1.0], [-1.0, 0.0]], [0, 1]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="one row of scores per gold label"):
        fit_biases([[0.0, 1.0]], [0, 1])


def test_metrics() -> None:
    predicted = ["yes", "yes", "no", "maybe"]
    gold = ["yes", "no", "no", "yes"]
    assert accuracy(predicted, gold) == 0.5
    # yes: tp1 fp1 fn1 -> 0.5; no: tp1 fp0 fn1 -> 2/3; maybe: tp0 -> 0
    assert macro_f1(predicted, gold) == pytest.approx((0.5 + 2 / 3 + 0) / 3)


def test_parse_decision_and_conclusion() -> None:
    text = "ANSWER: No\nCONCLUSION: Aspirin did not prevent stroke. [E3]"
    assert parse_decision(text) == "no"
    assert parse_conclusion(text) == "Aspirin did not prevent stroke. [E3]"
    assert parse_decision("I think yes") is None and parse_conclusion("ANSWER: yes") is None


def test_load_pubmedqa_native_format(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"1": {"QUESTION": "Q?", "CONTEXTS": ["a", "b"], "LABELS": ["BACKGROUND", "RESULTS"],
                                      "YEAR": "2001", "final_decision": "yes", "LONG_ANSWER": "c"}}))  # fmt: skip
    [loaded] = load_pubmedqa(path)
    assert loaded.pmid == "1" and loaded.sections == ("BACKGROUND", "RESULTS") and loaded.decision == "yes"
    path.write_text(json.dumps({"1": {"CONTEXTS": []}}))
    with pytest.raises(ConfigError, match=r"p\.json: item 1: needs QUESTION"):
        load_pubmedqa(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_pubmedqa(tmp_path / "missing.json")


def test_pubmedqa_prompt_keeps_section_order_and_results_first_under_budget() -> None:
    template = load_template("pubmedqa")
    evidence = gold_evidence(item())
    full = pubmedqa_prompt(template, "Q?", evidence, count_tokens=words, max_prompt_tokens=1000, keep_order=True)
    assert [e.title for e in full.evidence] == ["Background", "Methods", "Results"]
    assert [e.key for e in full.evidence] == ["E1", "E2", "E3"]
    user = full.messages[1].content
    assert user.index("Background:") < user.index("Methods:") < user.index("Results:")
    # The same chat as the engine's renderer gives for the same passages in that display order.
    assert full.messages[0].content == render(template, "Q?", [], count_tokens=words, max_prompt_tokens=1000)\
        .messages[0].content  # fmt: skip
    empty = pubmedqa_prompt(template, "Q?", [], count_tokens=words, max_prompt_tokens=1000, keep_order=True)
    tight = pubmedqa_prompt(template, "Q?", evidence, count_tokens=words,
                            max_prompt_tokens=empty.prompt_tokens + 16 + 60, keep_order=True)  # fmt: skip
    titles = [e.title for e in tight.evidence]
    assert "Results" in titles and titles[-1] == "Results"  # results keep their room; background is cut
    assert len(tight.evidence) < 3 or len(tight.evidence[0].text) < len(evidence[0].chunk.text)


def test_mcq_template_and_question() -> None:
    question = mcq_question("Which vitamin deficiency causes scurvy?", {"B": "Vitamin D", "A": "Vitamin C"})
    assert question.splitlines() == ["Which vitamin deficiency causes scurvy?", "A. Vitamin C", "B. Vitamin D"]
    prompt = render(load_template("mcq"), question, [], count_tokens=words, max_prompt_tokens=500)
    assert "ANSWER: A" in prompt.messages[0].content
    assert (
        prompt.messages[1].content.startswith("Question: Which vitamin")
        and "<evidence" not in prompt.messages[1].content
    )


def test_real_pubmedqa_dev(shared_data: Path) -> None:
    items = load_pubmedqa(shared_data / "pubmedqa" / "pqal_dev.json")
    assert len(items) == 500 and {i.decision for i in items} == set(PUBMEDQA_LABELS)
    assert all(len(i.sections) == len(i.contexts) for i in items)
