"""Base vs fine-tuned on the validation split: the before/after table of `clinrag finetune-eval`.

Rows: the base model as it comes, the base with label biases fitted on the calibration split (the same recipe
the fine-tuned model gets, so the gain of fine-tuning is not confused with the gain of calibration), the
fine-tuned model without and with its card's biases. Only validation items are scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.answering.closed_form import PUBMEDQA_LABELS, PubMedQAItem, fit_biases
from rag.answering.prompts import PromptTemplate, RenderedPrompt, render
from rag.checking.support import LexicalSupportChecker
from rag.retrieval.protocols import EvidenceSearch
from rag.training.finetune.data import Budgets, MedQuADQuery
from rag.training.finetune.evaluate import (
    SETTINGS,
    ClosedFormResult,
    GenerationResult,
    ScoringGenerator,
    Setting,
    closed_form_eval,
    generation_eval,
    pubmedqa_item_prompt,
    rebias,
)


@dataclass(frozen=True)
class ModelReport:
    name: str
    closed_form: dict[str, dict[str, Any]]  # "gold" / "rag" / "gold+bias" / "rag+bias" -> summary
    generation: dict[str, dict[str, Any]]  # "pubmedqa" / "answer" -> GenerationResult as JSON


@dataclass(frozen=True)
class EvalPlan:
    validation: list[PubMedQAItem]
    calibration: list[PubMedQAItem]  # biases for the base model are fitted here (never on validation)
    medquad: list[MedQuADQuery]  # held-out treatment questions for the answer template
    generate: int  # answers generated per kind (0: closed-form only)
    budgets: Budgets
    max_new_tokens: int = 128
    closed_form: bool = True  # False: generated answers only (the two halves fit separate 45-minute runs)


def answer_prompts(
    queries: Sequence[MedQuADQuery],
    template: PromptTemplate,
    searcher: EvidenceSearch,
    count_tokens: Any,
    budgets: Budgets,
) -> list[RenderedPrompt]:
    """The engine's answer prompt over what retrieval returns for each question (no gold passage added)."""
    prompts = []
    for query in queries:
        evidence = searcher.search(query.question, k=budgets.answer_k)
        prompts.append(
            render(
                template,
                query.question,
                evidence,
                count_tokens=count_tokens,
                max_prompt_tokens=budgets.answer_prompt_tokens,
            )
        )
    return prompts


def evaluate_model(
    generator: ScoringGenerator,
    plan: EvalPlan,
    templates: tuple[PromptTemplate, PromptTemplate],
    searcher: EvidenceSearch,
    checker: LexicalSupportChecker,
    *,
    bias: dict[str, list[float] | None],
    progress: bool = False,
) -> ModelReport:
    """Closed-form in both settings (raw and with `bias`, or biases fitted on the calibration items when a
    setting's bias is None), then generated answers."""
    pubmedqa_template, answer_template = templates
    gold = [i.decision for i in plan.validation]
    closed: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS if plan.closed_form else ():
        result = closed_form_eval(
            generator, plan.validation, setting, pubmedqa_template, plan.budgets, searcher=searcher, progress=progress
        )
        closed[setting] = result.summary()
        offsets = bias.get(setting) or _fit(generator, plan, setting, pubmedqa_template, searcher, progress)
        closed[f"{setting}+bias"] = {**rebias(result, gold, offsets).summary(), "bias": offsets}
    generation: dict[str, dict[str, Any]] = {}
    if plan.generate:
        count = generator.count_tokens
        pubmedqa = [
            pubmedqa_item_prompt(i, "gold", pubmedqa_template, count, plan.budgets)
            for i in plan.validation[: plan.generate]
        ]
        answers = answer_prompts(plan.medquad[: plan.generate], answer_template, searcher, count, plan.budgets)
        for kind, prompts in (("pubmedqa", pubmedqa), ("answer", answers)):
            result_g: GenerationResult = generation_eval(
                generator, prompts, kind, checker, max_new_tokens=plan.max_new_tokens, progress=progress
            )
            generation[kind] = asdict(result_g)
    return ModelReport(generator.name, closed, generation)


def _fit(
    generator: ScoringGenerator,
    plan: EvalPlan,
    setting: Setting,
    template: PromptTemplate,
    searcher: EvidenceSearch,
    progress: bool,
) -> list[float]:
    index = {label: n for n, label in enumerate(PUBMEDQA_LABELS)}
    result: ClosedFormResult = closed_form_eval(
        generator,
        plan.calibration,
        setting,
        template,
        plan.budgets,
        searcher=searcher,
        progress=progress,
    )
    return fit_biases(result.loglik, [index[i.decision] for i in plan.calibration])


def table(reports: Sequence[ModelReport]) -> str:
    """The before/after table as Markdown."""
    rows = ["| model | setting | accuracy | macro-F1 | predicted yes/no/maybe |", "|---|---|---|---|---|"]
    for report in reports:
        for setting, r in report.closed_form.items():
            counts = "/".join(str(r["predicted"].get(label, 0)) for label in PUBMEDQA_LABELS)
            rows.append(f"| {_short(report.name)} | {setting} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {counts} |")
    rows += [
        "",
        "| model | answers | n | format valid | citation valid | support rate (claims) | abstained | mean new tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for kind, g in report.generation.items():
            rows.append(
                f"| {_short(report.name)} | {kind} | {g['outputs']} | {g['format_validity']:.4f} | "
                f"{g['citation_validity']:.4f} | {g['support_rate']:.4f} ({g['claims']}) | {g['abstained']} | "
                f"{g['mean_new_tokens']:.1f} |"
            )
    return "\n".join(rows)


def _short(name: str) -> str:
    if "+lora:" in name:
        return "fine-tuned (" + Path(name.split("+lora:", 1)[1]).name + ")"
    return "base"
