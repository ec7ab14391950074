"""What every generator backend speaks: chat messages in, one `Generation` out.

Backends: `LocalGenerator` (a Hugging Face causal LM on this machine), `OpenAIChatGenerator` (any
OpenAI-compatible HTTP endpoint) and `ScriptedGenerator` (deterministic, for tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from rag.core.errors import ClinragError

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error"]

_ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


class GenerationError(ClinragError):
    """A generator could not produce text: an endpoint refused or failed, or the prompt does not fit."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def __post_init__(self) -> None:
        # Roles often come from files or HTTP payloads, where the Literal type is not enforced.
        if self.role not in _ROLES:
            raise ValueError(f"chat message role must be one of {sorted(_ROLES)}, got {self.role!r}")


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    finish_reason: FinishReason  # "length": cut by max_new_tokens; "stop": end of turn or a stop string
    model: str

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@runtime_checkable
class Generator(Protocol):
    """Turns a chat into the assistant's next reply."""

    @property
    def name(self) -> str:
        """The model as recorded in results (hub id, folder or endpoint model, plus adapter/quantisation)."""
        ...

    @property
    def context_window(self) -> int:
        """Most tokens the model attends to: prompt and reply together."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the model's own tokenizer (an estimate where the backend has none)."""
        ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generation:
        """The assistant's reply; temperature 0 is greedy and reproducible. Text is cut at the first stop string."""
        ...


@runtime_checkable
class LabelScorer(Protocol):
    """Closed-form answers (yes/no/maybe, A-E) scored by likelihood instead of parsed from free text."""

    def score_labels(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Log-likelihood (natural log, summed over tokens) of each label as the start of the assistant's reply."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def check_request(messages: Sequence[ChatMessage], max_new_tokens: int, temperature: float) -> None:
    """Shared argument checks, so every backend fails the same way on the same mistake."""
    if not messages:
        raise ValueError("generate needs at least one chat message")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0.0 <= temperature <= 2.0:
        raise ValueError(f"temperature must be within [0, 2], got {temperature}")


def reply_budget(name: str, context_window: int, prompt_tokens: int, wanted: int) -> int:
    """New tokens the reply may have: `wanted`, less if the context window is nearly full; an error if it is full."""
    room = context_window - prompt_tokens
    if room < 1:
        raise GenerationError(
            f"generator {name!r}: the prompt has {prompt_tokens} tokens but the context window is "
            f"{context_window}; pass fewer or shorter evidence passages, or raise generator.context_window"
        )
    return min(wanted, room)


def check_labels(labels: Sequence[str]) -> None:
    if not labels:
        raise ValueError("score_labels needs at least one label")
    if any(not label for label in labels):
        raise ValueError("score_labels got an empty label; every label needs at least one character")
