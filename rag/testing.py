"""The deterministic fakes, one per role, for tests and wiring checks: no model, no I/O, same output every run.

- embedder: `HashEmbedder` (hashed bag of words and bigrams)
- generator: `ScriptedGenerator` (replies from a list or a function; label scores from a mapping or a function)
- reranker: `LexicalReranker` (the share of the question's words a passage contains)
- support judge: `ScriptedJudge` (the first cue word found in the claim gives the label)

Production code never imports this module (a contract in `.importlinter`); the model-free paths that ship
(`rag.checking.support.LexicalSupportChecker`, the extractive answerer) are real implementations, not fakes.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rag.checking.verdict import LABELS, Floats, Label, Pair, Verdict
from rag.core.types import Evidence
from rag.models.embed import Span, Vectors
from rag.models.generators.base import (
    ChatMessage,
    FinishReason,
    Generation,
    GenerationError,
    check_labels,
    check_request,
    cut_at_stop,
    reply_budget,
)
from rag.retrieval.rerank import rerank_with, word_overlap

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


class HashEmbedder:
    """Deterministic fake: hashed bag of words and bigrams, no model. For tests and wiring checks.

    Texts sharing words get similar vectors, so retrieval tests behave sensibly without a model.
    """

    _TOKEN = re.compile(r"\w+|[^\w\s]")

    def __init__(self, dim: int = 64, max_tokens: int = 128, name: str = "clinrag/hash-embedder") -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8, got {max_tokens}")
        self._dim = dim
        self._max_tokens = max_tokens
        self._name = f"{name}-{dim}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def normalized(self) -> bool:
        return True

    def token_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        return [[m.span() for m in self._TOKEN.finditer(t)] for t in texts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # Two "special tokens", like [CLS] and [SEP], so budget arithmetic is exercised as for BERT.
        return [len(spans) + 2 for spans in self.token_spans(texts)]

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in re.findall(r"\w+", text)]
            for feature in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm > 0 else _unit(self._dim)
        return out


def _unit(dim: int) -> Vectors:
    v = np.zeros(dim, dtype=np.float32)
    v[0] = 1.0
    return v


class LexicalReranker:
    """Deterministic fake: the share of the question's words that the passage contains."""

    name = "lexical"

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [word_overlap(question, text) for question, text in pairs]

    def rerank(self, query: str, evidence: list[Evidence]) -> list[Evidence]:
        return rerank_with(self, query, evidence)


class ScriptedJudge:
    """A deterministic fake for tests: the first cue (a lower-case phrase) found in the claim gives the label,
    with probability 0.9; a claim with no cue gets `default`. No model, no I/O."""

    def __init__(self, cues: Mapping[str, Label], default: Label = "neutral") -> None:
        self.cues = dict(cues)
        self.default = default
        self.calls: list[list[Pair]] = []  # every batch judged, for tests that count model calls

    @property
    def name(self) -> str:
        return "scripted-judge"

    def judge(self, pairs: Sequence[Pair]) -> list[Verdict]:
        self.calls.append(list(pairs))
        return [self._verdict(claim) for claim, _ in pairs]

    def score(self, pairs: Sequence[Pair]) -> Floats:
        return np.array([v.support for v in self.judge(pairs)], dtype=np.float64)

    def supported(self, score: float) -> bool:
        return bool(score >= 0.5)

    def _verdict(self, claim: str) -> Verdict:
        text = claim.lower()
        label = next((label for cue, label in self.cues.items() if cue in text), self.default)
        probabilities = tuple(0.9 if name == label else 0.05 for name in LABELS)
        return Verdict(label, probabilities, "")  # type: ignore[arg-type]
