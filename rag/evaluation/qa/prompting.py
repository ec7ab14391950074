"""The chat shown for one item under one configuration: context, worked examples, the question.

Context is the item's own abstract (setting gold, shown in section order as `rag.answering.closed_form` renders it),
what retrieval returns (setting retrieved), or nothing (closed-book). Worked examples from the pool become
chat turns before the question, each rendered by the same template with the example's own context cut to
`example_prompt_tokens`, followed by the reply the model should give (the fine-tuning target format); they never
use retrieval, so an example costs the same whatever the configuration retrieves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.answering.closed_form import gold_evidence, label_reply, mcq_prompt, pubmedqa_prompt
from rag.answering.prompts import EvidenceItem, PromptTemplate, RenderedPrompt, render
from rag.core.errors import ConfigError
from rag.core.types import Evidence
from rag.datasets.qa import QAItem
from rag.evaluation.qa.grid import POOL_SELECTORS, RunConfig
from rag.evaluation.qa.selectors import ExampleSelector
from rag.models.generators.base import ChatMessage
from rag.retrieval.protocols import EvidenceSearch

CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class ItemPrompt:
    messages: tuple[ChatMessage, ...]
    evidence: tuple[EvidenceItem, ...]  # what the question's turn shows, under keys E1..En
    retrieved: tuple[Evidence, ...]  # what retrieval returned, best first (before the budget cut)
    shot_ids: tuple[str, ...]
    prompt_tokens: int

    @property
    def sha256(self) -> str:
        """The same recipe as `RenderedPrompt.sha256`, over every turn including the worked examples."""
        payload = json.dumps([[m.role, m.content] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class PromptBuilder:
    config: RunConfig
    template: PromptTemplate
    count_tokens: CountTokens
    max_prompt_tokens: int
    searcher: EvidenceSearch | None = None
    selector: ExampleSelector | None = None

    def __post_init__(self) -> None:
        config = self.config
        if config.retrieval != "none" and self.searcher is None:
            raise ConfigError(f"configuration {config.label}: retrieval {config.retrieval} needs an index (--index)")
        if config.shots and config.selector == "template" and len(self.template.examples) < config.shots:
            raise ConfigError(
                f"template {self.template.label} has {len(self.template.examples)} curated examples, fewer than "
                f"{config.shots} shots; use a template with examples (answer-few-shot) or a pool selector"
            )
        if config.shots and config.selector in POOL_SELECTORS and self.selector is None:
            raise ConfigError(f"configuration {config.label}: selector {config.selector} needs an example pool")

    def build(self, item: QAItem) -> ItemPrompt:
        retrieved = self._retrieve(item)
        final = self._final_turn(item, retrieved)
        examples, shot_ids = self._examples(item)
        turns: list[ChatMessage] = []
        tokens = final.prompt_tokens
        for user, reply in examples:
            turns += [user, ChatMessage("assistant", reply)]
            tokens += self.count_tokens(user.content) + self.count_tokens(reply)
        messages = (final.messages[0], *turns, *final.messages[1:])
        return ItemPrompt(messages, final.evidence, tuple(retrieved), shot_ids, tokens)

    # ------------------------------------------------------------------------------------------------ parts

    def _retrieve(self, item: QAItem) -> list[Evidence]:
        if self.config.setting != "retrieved" or self.config.retrieval == "none":
            return []
        assert self.searcher is not None  # checked in __post_init__
        return self.searcher.search(item.query, k=self.config.k, mode=self.config.retrieval)

    def _final_turn(self, item: QAItem, retrieved: Sequence[Evidence]) -> RenderedPrompt:
        if self.config.setting == "gold":
            if item.pubmedqa is None:
                raise ConfigError(f"item {item.item_id} has no gold context; use setting 'retrieved'")
            return pubmedqa_prompt(
                self.template,
                item.prompt_question,
                gold_evidence(item.pubmedqa),
                count_tokens=self.count_tokens,
                max_prompt_tokens=self.max_prompt_tokens,
                keep_order=True,
            )
        curated = self.template.examples[: self.config.shots] if self.config.selector == "template" else ()
        if item.options and not curated:
            return mcq_prompt(
                self.template,
                item.question,
                dict(item.options),
                retrieved,
                count_tokens=self.count_tokens,
                max_prompt_tokens=self.max_prompt_tokens,
            )
        return render(
            self.template,
            item.prompt_question,
            retrieved,
            count_tokens=self.count_tokens,
            max_prompt_tokens=self.max_prompt_tokens,
            examples=curated,
        )

    def _examples(self, item: QAItem) -> tuple[list[tuple[ChatMessage, str]], tuple[str, ...]]:
        if not self.config.shots or self.config.selector not in POOL_SELECTORS:
            return [], ()
        assert self.selector is not None  # checked in __post_init__
        chosen = self.selector.select(item, self.config.shots, self.config.selector)
        return [self._example_turn(c) for c in chosen], tuple(c.item_id for c in chosen)

    def _example_turn(self, example: QAItem) -> tuple[ChatMessage, str]:
        budget = self.config.budgets.example_prompt_tokens
        if example.pubmedqa is not None:
            from rag.training.finetune.data import Budgets, pubmedqa_gold_example

            worked = pubmedqa_gold_example(
                example.pubmedqa, self.template, self.count_tokens, Budgets(gold_prompt_tokens=budget)
            )
            return worked.messages[-1], worked.reply
        if not example.closed_form:
            raise ConfigError(f"pool item {example.item_id} has no label; pool examples must be closed-form")
        shown = mcq_prompt(
            self.template,
            example.question,
            dict(example.options),
            count_tokens=self.count_tokens,
            max_prompt_tokens=budget,
        )
        return shown.messages[-1], label_reply(example.answer)
