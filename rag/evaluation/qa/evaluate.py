"""One item under one configuration: prompt -> label likelihoods or generated text -> parsed answer -> record.

Nothing an item does can end the run: any error becomes a failed record naming what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rag.answering.citations import ParsedReply, ParsedSuggestion, parse_reply
from rag.answering.closed_form import label_reply, parse_conclusion, parse_decision, score_choices
from rag.answering.selection import read_reply
from rag.checking.verdict import SupportJudge
from rag.core.errors import ConfigError
from rag.datasets.qa import QAItem
from rag.evaluation.metrics import unique_in_order
from rag.evaluation.qa.grid import RunConfig
from rag.evaluation.qa.prompting import ItemPrompt, PromptBuilder
from rag.evaluation.qa.records import Prediction
from rag.evaluation.qa.scoring import citation_counts, kqa_counts, parse_choice
from rag.models.generators.base import Generator, LabelScorer

ABSTAINED = "abstained"


@dataclass
class ItemEvaluator:
    config: RunConfig
    builder: PromptBuilder
    generator: Generator
    checker: SupportJudge | None
    max_new_tokens: int
    bias: Sequence[float] | None = None

    def evaluate(self, item: QAItem) -> Prediction:
        started = time.perf_counter()
        try:
            prompt = self.builder.build(item)
            fields = (
                self._likelihood(item, prompt) if self.config.scoring == "likelihood" else self._generate(item, prompt)
            )
        except Exception as exc:  # one bad item (timeout, too long a prompt, a model error) must not end the run
            return Prediction(
                self.config.config_id,
                item.item_id,
                item.subset,
                "failed",
                item.answer if item.closed_form else "",
                error=f"{type(exc).__name__}: {exc}"[:500],
                latency_s=time.perf_counter() - started,
            )
        return Prediction(
            config_id=self.config.config_id,
            item_id=item.item_id,
            subset=item.subset,
            status="ok",
            gold=item.answer if item.closed_form else "",
            prompt_sha256=prompt.sha256,
            shot_ids=prompt.shot_ids,
            retrieved_ids=tuple(e.chunk.chunk_id for e in prompt.retrieved),
            retrieved_docs=tuple(unique_in_order([e.chunk.doc_id for e in prompt.retrieved])),
            latency_s=time.perf_counter() - started,
            prompt_tokens=prompt.prompt_tokens,
            **fields,
        )

    def _likelihood(self, item: QAItem, prompt: ItemPrompt) -> dict[str, Any]:
        if not isinstance(self.generator, LabelScorer):
            raise ConfigError(f"generator {self.generator.name!r} cannot score labels; use scoring 'generate'")
        scores = score_choices(self.generator, prompt.messages, item.labels, bias=self.bias)
        return {
            "raw_output": label_reply(scores.choice),  # the reply the scores chose; nothing was sampled
            # Raw log-likelihoods: other biases can be tried on them later without running the model again.
            "label_scores": {label: round(s, 4) for label, s in zip(scores.labels, scores.loglik, strict=True)},
            "extra": {"label_bias": list(self.bias)} if self.bias is not None else {},
            "parsed": scores.choice,
            "correct": scores.choice == item.answer,
        }

    def _generate(self, item: QAItem, prompt: ItemPrompt) -> dict[str, Any]:
        template = self.builder.template
        generation = self.generator.generate(
            prompt.messages, max_new_tokens=template.reply_tokens(self.max_new_tokens), temperature=0.0
        )
        text = generation.text
        fields: dict[str, Any] = {"raw_output": text, "new_tokens": generation.new_tokens}
        passages = {e.key: e.text for e in prompt.evidence}
        if item.format == "kqa":
            statements, abstained = _statements(read_reply(text, prompt.evidence, template), text)
            fields["parsed"] = ABSTAINED if abstained else " ".join(s.text for s in statements) or None
            if self.checker is not None:
                answer = " ".join(s.text for s in statements)
                fields["kqa"] = vars_of(kqa_counts(answer, item.must_have, item.nice_to_have, self.checker))
                fields["citations"] = vars_of(citation_counts(statements, passages, self.checker))
            return fields
        parsed = parse_decision(text) if item.format == "pubmedqa" else parse_choice(text, item.labels)
        fields.update(parsed=parsed, correct=parsed == item.answer)
        if item.format == "pubmedqa" and self.checker is not None and passages:
            statements = _conclusion_statements(text)
            fields["citations"] = vars_of(citation_counts(statements, passages, self.checker))
        return fields


def _statements(reply: ParsedReply, text: str) -> tuple[tuple[ParsedSuggestion, ...], bool]:
    """The parsed reply's statements with their citations; prose (`text`) that cites nothing is one uncited
    statement."""
    if reply.abstained:
        return (), True
    if reply.suggestions:
        return reply.suggestions, False
    body = " ".join(text.split())
    return ((ParsedSuggestion(body, ()),) if body else ()), False


def _conclusion_statements(text: str) -> tuple[ParsedSuggestion, ...]:
    conclusion = parse_conclusion(text)
    return _statements(parse_reply(conclusion), conclusion)[0] if conclusion else ()


def vars_of(counts: Any) -> dict[str, int]:
    return {k: int(v) for k, v in asdict(counts).items()}
