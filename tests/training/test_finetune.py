"""Fine-tuning: examples in the engine's templates, the split, the loss mask, a few LoRA steps, card and adapter."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from rag.answering.citations import parse_reply
from rag.answering.closed_form import PubMedQAItem, gold_evidence, parse_conclusion, parse_decision, pubmedqa_prompt
from rag.answering.prompts import load_template, render
from rag.core.types import Chunk, DocumentMeta, Evidence
from rag.models.card import TrainingCard, card_biases, read_card, update_card
from rag.retrieval.filters import Filters
from rag.training.finetune.data import (
    ABSTAIN_REPLY,
    Budgets,
    Example,
    MedQuADQuery,
    abstain_example,
    medquad_example,
    pubmedqa_gold_example,
    pubmedqa_rag_example,
    split_pubmedqa,
    suggestion_sentences,
    training_docs,
)
from rag.training.finetune.train import IGNORE, Encoded, LoraParams, TrainConfig, encode, epoch_order
from tests.training.tiny_models import tiny_llama


def words(text: str) -> int:
    return len(text.split())


def evidence(doc_id: str, text: str, title: str = "Topic", qtype: str = "") -> Evidence:
    extra = {"qtype": qtype} if qtype else {}
    doc_type = "literature" if doc_id.startswith("pmid:") else "consumer-health"
    chunk = Chunk(f"{doc_id}#0", doc_id, text, title, (), 0, len(text), None, None, 10, doc_id)
    return Evidence(chunk, DocumentMeta(title=title, doc_type=doc_type, source="test", extra=extra), 1.0)  # type: ignore[arg-type]


class FakeSearch:
    def __init__(self, passages: list[Evidence]) -> None:
        self.passages = passages

    def search(self, query: str, k: int | None = None, filters: Filters | None = None) -> list[Evidence]:
        found = [p for p in self.passages if filters is None or p.chunk.doc_id in filters.doc_ids]
        return found[: k or 10]


def pubmed_item(pmid: str, decision: str) -> PubMedQAItem:
    return PubMedQAItem(
        pmid, f"Does drug {pmid} work?", ("Background text here.", "Rates fell by 20% (p < 0.01)."),
        ("BACKGROUND", "RESULTS"), "2012", decision, "Drug works. Medical Subject Headings (MeSH): drugs.",
    )  # fmt: skip


ITEMS = [pubmed_item(str(1000 + i), ["yes", "no", "maybe"][i % 3 if i % 5 else 0]) for i in range(60)]


# --- examples -------------------------------------------------------------------------------------------------


def test_pubmedqa_gold_example_is_the_engine_rendering_and_parses() -> None:
    template = load_template("pubmedqa")
    example = pubmedqa_gold_example(ITEMS[1], template, words, Budgets())
    expected = pubmedqa_prompt(template, ITEMS[1].question, gold_evidence(ITEMS[1]), count_tokens=words,
                               max_prompt_tokens=Budgets().gold_prompt_tokens, keep_order=True)  # fmt: skip
    assert example.messages == expected.messages
    assert example.reply == f"ANSWER: {ITEMS[1].decision}\nCONCLUSION: Drug works. [E2]"  # cites the results
    assert parse_decision(example.reply) == ITEMS[1].decision
    assert parse_reply(parse_conclusion(example.reply) or "").suggestions[0].citations == ("E2",)


def test_rag_example_adds_the_own_abstract_and_hides_other_abstracts() -> None:
    split = split_pubmedqa(ITEMS, seed=1, validation=15, calibration=6)
    train_item = next(i for i in ITEMS if i.pmid in split.train)
    held_out = split.validation[0]
    searcher = FakeSearch([
        evidence(f"pmid:{held_out}", "A validation abstract that must not be shown."),
        evidence("medquad:1", "Consumer passage about drugs.", qtype="information"),
        evidence(f"pmid:{train_item.pmid}", "The own abstract: rates fell."),
    ])  # fmt: skip
    example = pubmedqa_rag_example(train_item, load_template("pubmedqa"), searcher, training_docs(split.train), words,
                                   Budgets(rag_k=2))  # fmt: skip
    user = example.messages[1].content
    assert "validation abstract" not in user and "The own abstract" in user
    key = "E1" if user.index("The own abstract") < user.index("Consumer passage") else "E2"
    assert example.reply.endswith(f"[{key}]") and example.kind == "pubmedqa-rag"


def test_medquad_and_abstain_examples_use_the_answer_template() -> None:
    template = load_template("answer")
    gold_text = ("Key points about care. Treatment with oral antibiotics such as amoxicillin is effective for most "
                 "people. Surgery may be needed when the infection spreads to the bone.")  # fmt: skip
    searcher = FakeSearch([
        evidence("medquad:2", "Symptoms include fever and pain in the joints.", qtype="symptoms"),
        evidence("medquad:1", gold_text, qtype="treatment"),
        evidence("medquad:3", "The condition is caused by bacteria entering a wound.", qtype="causes"),
    ])  # fmt: skip
    query = MedQuADQuery("mq1", "What are the treatments for osteomyelitis ?", "medquad:1")
    example = medquad_example(query, template, searcher, lambda _: True, words, Budgets(), random.Random(0))
    assert example is not None
    rendered = render(template, query.question, [], count_tokens=words, max_prompt_tokens=900)
    assert example.messages[0] == rendered.messages[0]  # the engine's own system prompt
    parsed = parse_reply(example.reply)
    assert example.reply.startswith("SUGGESTIONS:\n1. ") and parsed.usable and len(parsed.suggestions) == 2
    [keys] = {s.citations for s in parsed.suggestions}  # every suggestion cites the gold passage
    shown = example.messages[1].content
    block = shown[shown.index(f'key="{keys[0]}"') :].split("</evidence>")[0]
    assert len(keys) == 1 and "amoxicillin" in block

    abstain = abstain_example(query, template, searcher, lambda _: True, words, Budgets())
    assert abstain is not None and abstain.reply == ABSTAIN_REPLY and parse_reply(abstain.reply).abstained
    assert "amoxicillin" not in abstain.messages[1].content


def test_suggestion_sentences_pick_treatment_sentences() -> None:
    text = "What is it? It is rare. Doctors treat it with steroid creams applied twice daily to the skin."
    assert suggestion_sentences(text, "How to treat it?") == [
        "Doctors treat it with steroid creams applied twice daily to the skin."
    ]


# --- split ----------------------------------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_stratified() -> None:
    split = split_pubmedqa(ITEMS, seed=7, validation=15, calibration=6)
    assert split == split_pubmedqa(list(reversed(ITEMS)), seed=7, validation=15, calibration=6)
    assert split != split_pubmedqa(ITEMS, seed=8, validation=15, calibration=6)
    parts = [set(split.train), set(split.calibration), set(split.validation)]
    assert sum(len(p) for p in parts) == len(ITEMS) == len(set().union(*parts))
    assert (len(split.validation), len(split.calibration)) == (15, 6)
    labels = {i.pmid: i.decision for i in ITEMS}
    share = sum(labels[p] == "yes" for p in split.validation) / 15
    assert abs(share - sum(i.decision == "yes" for i in ITEMS) / len(ITEMS)) < 0.1
    allowed = training_docs(split.train)
    assert all(not allowed(f"pmid:{p}") for p in split.validation + split.calibration)
    assert allowed("medquad:00001") and allowed(f"pmid:{split.train[0]}")


def test_epoch_order_balances_labels() -> None:
    encoded = [Encoded((1,), (1,), (1.0,), "pubmedqa-gold", "yes")] * 6 + [
        Encoded((1,), (1,), (1.0,), "pubmedqa-gold", "maybe"),
        Encoded((1,), (1,), (1.0,), "medquad", ""),
    ]
    order = epoch_order(encoded, random.Random(0), balance=1.0)
    assert order.count(6) == 6 and order.count(7) == 1 and len(order) == 13
    assert sorted(epoch_order(encoded, random.Random(0), balance=0.0)) == list(range(8))


# --- tokenization, training, saving ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer: Any) -> Any:
    return smollm2_tokenizer


@pytest.fixture()
def tiny_model(tokenizer: Any) -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return tiny_llama(len(tokenizer))


def gold_example() -> Example:
    return pubmedqa_gold_example(ITEMS[2], load_template("pubmedqa"), words, Budgets())


def test_loss_mask_covers_only_the_reply(tokenizer: Any) -> None:
    example = gold_example()
    encoded = encode(tokenizer, example, label_weight=3.0)
    chat = [{"role": m.role, "content": m.content} for m in example.messages]
    prompt_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    assert list(encoded.input_ids[: len(prompt_ids)]) == prompt_ids  # as LocalGenerator.chat_ids builds it
    assert all(t == IGNORE for t in encoded.labels[: len(prompt_ids)])
    scored = [t for t in encoded.labels if t != IGNORE]
    assert tokenizer.decode(scored) == example.reply + "<|im_end|>"
    weights = [w for w, t in zip(encoded.weights, encoded.labels, strict=True) if t != IGNORE]
    assert weights[0] == 3.0 and weights[-1] == 1.0 and all(w > 0 for w in weights)
    assert sum(w == 0 for w in encoded.weights) == len(encoded.input_ids) - len(scored)


def test_every_kinds_decision_line_is_weighted(tokenizer: Any) -> None:
    messages = gold_example().messages
    answer = Example("medquad", "mq1", messages, "SUGGESTIONS:\n1. Metformin is first-line therapy. [E1]")
    abstain = Example("abstain", "mq2", messages, ABSTAIN_REPLY)

    def reply_weights(example: Example) -> list[float]:
        encoded = encode(tokenizer, example, label_weight=5.0)
        return [w for w, t in zip(encoded.weights, encoded.labels, strict=True) if t != IGNORE]

    first_line = len(tokenizer("SUGGESTIONS:", add_special_tokens=False)["input_ids"])
    weights = reply_weights(answer)
    assert weights[:first_line] == [5.0] * first_line and set(weights[first_line:]) == {1.0}
    # A one-line reply is all decision, except the end-of-turn token which follows the line.
    assert reply_weights(abstain)[:-1] == [5.0] * (len(reply_weights(abstain)) - 1)


def test_token_norm_loss_is_the_weighted_sum_over_a_constant(tiny_model: Any, tokenizer: Any) -> None:
    torch = pytest.importorskip("torch")
    from rag.training.finetune.train import example_loss

    messages = gold_example().messages
    long = encode(tokenizer, Example("medquad", "mq1", messages, "SUGGESTIONS:\n" + "1. Rest and fluids. [E1]\n" * 8))
    short = encode(tokenizer, Example("abstain", "mq2", messages, ABSTAIN_REPLY))
    with torch.no_grad():
        for item in (long, short):
            mean = float(example_loss(tiny_model, item))
            summed = float(example_loss(tiny_model, item, token_norm=10.0))
            weight = sum(item.weights)
            assert summed == pytest.approx(mean * weight / 10.0, rel=1e-4)
    # With the sum, an example's pull grows with its reply's weight; with the mean, both pull alike.
    assert sum(long.weights) > 3 * sum(short.weights)
    assert TrainConfig().token_norm == 64.0 and TrainConfig().to_json()["token_norm"] == 64.0


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_three_steps_reduce_the_loss_and_the_adapter_reloads(tiny_model: Any, tokenizer: Any, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from rag.training.finetune.train import attach_lora, example_loss, save_adapter, train

    encoded = encode(tokenizer, gold_example(), label_weight=1.0)
    model = attach_lora(tiny_model, LoraParams(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():
        before = float(example_loss(model, encoded))
    config = TrainConfig(lr=5e-2, epochs=3, accumulation=1, warmup_share=0.0, balance=0.0, seed=0)
    result = train(model, [encoded], config, progress=False)
    with torch.no_grad():
        after = float(example_loss(model, encoded))
    assert result.steps == 3 and after < before - 0.1

    size = save_adapter(model, tmp_path / "adapter", base_name="tiny")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "tiny" and saved["r"] == 4
    assert size == (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    from safetensors.torch import load_file

    assert {str(t.dtype) for t in load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).values()} == {
        "torch.float16"
    }
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    fresh = tiny_model.__class__(tiny_model.config)
    fresh.load_state_dict(model.get_base_model().state_dict(), strict=False)
    reloaded = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-2)


def test_card_round_trip(tmp_path: Path) -> None:
    card = TrainingCard(
        base_model="base", seed=3, config=TrainConfig(seed=3).to_json(), budgets={"rag_k": 3},
        data={"files": {"x": "abc"}, "split": {"validation": ["1"]}},
        calibration={"pubmedqa-gold": {"labels": ["yes", "no", "maybe"], "bias": [0.0, 1.0, 2.0]}},
    )  # fmt: skip
    card.write(tmp_path)
    loaded = read_card(tmp_path)
    assert loaded["format"] == "clinrag-training-card/1" and loaded["seed"] == 3
    assert loaded["config"]["lora"]["r"] == 16 and loaded["machine"]["python"]
    assert card_biases(loaded, "pubmedqa-gold", ("yes", "no", "maybe")) == [0.0, 1.0, 2.0]
    assert card_biases(loaded, "pubmedqa-rag", ("yes", "no", "maybe")) is None
    update_card(tmp_path, "validation", {"accuracy": 0.7})
    assert read_card(tmp_path)["metrics"]["validation"] == {"accuracy": 0.7}
    (tmp_path / "training_card.json").write_text("{}")
    with pytest.raises(Exception, match="not a clinrag-training-card/1"):
        read_card(tmp_path)


def test_cli_registers_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from rag.cli.finetune import register

    parser = argparse.ArgumentParser(prog="clinrag")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["finetune", "--out", "x", "--seed", "5", "--epochs", "1.5", "--max-steps", "3"])
    assert (args.seed, args.epochs, args.max_steps, str(args.out)) == (5, 1.5, 3, "x")
    assert parser.parse_args(["finetune-eval", "--adapter", "a", "--generate", "0"]).generate == 0
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["finetune", "--help"])
    assert exit_info.value.code == 0 and "--max-steps" in capsys.readouterr().out


# --- evaluation -----------------------------------------------------------------------------------------------


def test_generation_metrics_with_scripted_answers() -> None:
    from rag.checking.support import LexicalSupportChecker
    from rag.testing import ScriptedGenerator
    from rag.training.finetune.evaluate import generation_eval

    template = load_template("answer")
    passage = evidence("medquad:1", "Amoxicillin treats the infection in most people.", qtype="treatment")
    prompt = render(template, "How is it treated?", [passage], count_tokens=words, max_prompt_tokens=900)
    replies = [
        "SUGGESTIONS:\n1. Amoxicillin treats the infection in most people. [E1]",
        "SUGGESTIONS:\n1. Amoxicillin treats it. [E7]",  # a key that names no passage
        "INSUFFICIENT EVIDENCE",
        "Take some rest.",  # nothing the engine can parse
    ]
    result = generation_eval(ScriptedGenerator(replies), [prompt] * 4, "answer", LexicalSupportChecker())
    assert result.outputs == 4 and result.abstained == 1
    assert result.format_validity == 0.75  # the prose reply is not parseable
    assert result.citation_validity == pytest.approx(1 / 3)  # over the 3 replies that do not abstain
    assert result.claims == 1 and result.support_rate == 1.0  # only the first cites a real passage, verbatim


def test_closed_form_eval_and_rebias() -> None:
    from rag.testing import ScriptedGenerator
    from rag.training.finetune.evaluate import closed_form_eval, rebias

    items = [pubmed_item("1", "yes"), pubmed_item("2", "no"), pubmed_item("3", "no")]
    gen = ScriptedGenerator([], label_scores={"ANSWER: yes": -1.0, "ANSWER: no": -1.5, "ANSWER: maybe": -4.0})
    result = closed_form_eval(gen, items, "gold", load_template("pubmedqa"), Budgets())
    assert result.accuracy == pytest.approx(1 / 3) and result.predicted == {"yes": 3}
    shifted = rebias(result, [i.decision for i in items], [0.0, 1.0, 0.0])
    assert shifted.accuracy == pytest.approx(2 / 3) and shifted.predicted == {"no": 3}
    with pytest.raises(ValueError, match="needs a searcher"):
        closed_form_eval(gen, items, "rag", load_template("pubmedqa"), Budgets())
