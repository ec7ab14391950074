"""The decoding guard that keeps a numbered suggestion from starting with its citation."""

from __future__ import annotations

from typing import Any

import pytest

from rag.models.generators.base import ChatMessage
from rag.models.generators.constrain import NoCitationAtLineStart, bracket_token_ids
from tests.training.tiny_models import tiny_llama


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer: Any) -> Any:
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def banned(tokenizer: Any) -> list[int]:
    return bracket_token_ids(tokenizer)


def ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_bracket_tokens_are_exactly_those_starting_with_a_bracket(tokenizer: Any, banned: list[int]) -> None:
    assert set(ids(tokenizer, "[")) <= set(banned) and set(ids(tokenizer, " [")) <= set(banned)
    assert all(tokenizer.decode([i]).lstrip().startswith("[") for i in banned)
    assert not set(ids(tokenizer, "Metformin")) & set(banned)
    assert 0 < len(banned) < 200


@pytest.mark.parametrize(
    ("reply", "guarded"),
    [
        ("SUGGESTIONS:\n1. ", True),
        ("SUGGESTIONS:\n1.", True),
        ("SUGGESTIONS:\n1. Nitrofurantoin for 5 days. [E1]\n2. ", True),
        ("1. ", True),
        ("SUGGESTIONS:\n1. Nitrofurantoin", False),
        ("SUGGESTIONS:\n1. Nitrofurantoin for 5 days. ", False),  # a citation ends a line
        ("ANSWER: yes\nCONCLUSION: ", False),
        ("Take 2. ", False),  # a number inside a line is not a list marker
    ],
)
def test_guard_bans_brackets_only_right_after_a_list_number(
    tokenizer: Any, banned: list[int], reply: str, guarded: bool
) -> None:
    torch = pytest.importorskip("torch")
    prompt = ids(tokenizer, "<|im_start|>assistant\n")
    input_ids = torch.tensor([prompt + ids(tokenizer, reply)])
    scores = torch.zeros(1, len(tokenizer))
    out = NoCitationAtLineStart(tokenizer, len(prompt), banned)(input_ids, scores.clone())
    blocked = torch.isinf(out[0]).nonzero().flatten().tolist()
    assert blocked == (sorted(banned) if guarded else [])


def test_local_generator_applies_the_guard_only_when_asked(tokenizer: Any) -> None:
    pytest.importorskip("torch")
    from rag.models.generators.local import LocalGenerator

    model = tiny_llama(len(tokenizer))
    messages = [ChatMessage("user", "What treats cystitis?")]
    for guard, expected in ((True, 1), (False, 0)):
        generator = LocalGenerator(model, tokenizer, name="tiny", context_window=2048, guard_suggestions=guard)
        assert len(generator._processors(5)) == expected
        assert generator.generate(messages, max_new_tokens=4).new_tokens == 4
