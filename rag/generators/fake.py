"""A deterministic generator for tests: scripted replies, recorded requests, no model."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rag.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    GenerationError,
    check_labels,
    check_request,
    cut_at_stop,
    reply_budget,
)

ReplyScript = Sequence[str] | Callable[[Sequence[ChatMessage]], str]
LabelScript = Mapping[str, float] | Callable[[Sequence[ChatMessage], Sequence[str]], Sequence[float]]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One request the generator received, for assertions in tests."""

    messages: tuple[ChatMessage, ...]
    max_new_tokens: int
    temperature: float
    stop: tuple[str, ...]


class ScriptedGenerator:
    """Replies from a list (in turn) or a function of the messages; label scores from a mapping or a function.

    Tokens are whitespace words * 1.3, rounded up, so budgets behave like a real subword tokenizer's. A reply
    longer than `max_new_tokens` is cut on a word boundary with finish_reason "length".
    """

    def __init__(
        self,
        replies: ReplyScript,
        *,
        context_window: int = 2048,
        label_scores: LabelScript | None = None,
        name: str = "clinrag/scripted",
    ) -> None:
        self._replies = replies
        self._next = 0
        self._context_window = context_window
        self._label_scores = label_scores
        self._name = name
        self.calls: list[ScriptedCall] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text.split()) * 1.3)

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generation:
        check_request(messages, max_new_tokens, temperature)
        self.calls.append(ScriptedCall(tuple(messages), max_new_tokens, temperature, tuple(stop)))
        prompt_tokens = sum(self.count_tokens(m.content) for m in messages)
        budget = reply_budget(self._name, self._context_window, prompt_tokens, max_new_tokens)
        text, stopped = cut_at_stop(self._reply(messages), stop)
        text, cut = self._fit(text, budget)
        reason: FinishReason = "length" if cut and not stopped else "stop"
        return Generation(text, prompt_tokens, self.count_tokens(text), 0.0, reason, self._name)

    def score_labels(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        check_labels(labels)
        script = self._label_scores
        if script is None:  # shorter labels are likelier, as with a real model
            return [-float(self.count_tokens(label) or 1) for label in labels]
        if callable(script):
            scores = [float(s) for s in script(messages, labels)]
            if len(scores) != len(labels):
                raise ValueError(f"label score function returned {len(scores)} scores for {len(labels)} labels")
            return scores
        return [float(script.get(label, -math.inf)) for label in labels]

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        if callable(self._replies):
            return self._replies(messages)
        if self._next >= len(self._replies):
            raise GenerationError(
                f"generator {self._name!r}: all {len(self._replies)} scripted replies are used up; "
                "script one reply per expected generate call"
            )
        reply = self._replies[self._next]
        self._next += 1
        return reply

    def _fit(self, text: str, budget: int) -> tuple[str, bool]:
        """The longest whitespace-word prefix of `text` whose token count fits `budget`, and whether it was cut."""
        if self.count_tokens(text) <= budget:
            return text, False
        words = text.split()
        keep = max(n for n in range(len(words) + 1) if self.count_tokens(" ".join(words[:n])) <= budget)
        return " ".join(words[:keep]), True
