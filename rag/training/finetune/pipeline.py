"""One fine-tuning run end to end: data -> examples -> LoRA -> label biases -> adapter + training card.

request = FinetuneRequest(out=Path("adapters/x"), data=DataPaths.under(Path("../shared/data")),
                          index_dir=Path("indexes/pubmedqa-medquad"))
card = run_finetune(request)
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.answering.closed_form import PUBMEDQA_LABELS, Objective, PubMedQAItem, fit_biases, load_pubmedqa
from rag.answering.prompts import PromptTemplate, load_template
from rag.core.config import DEFAULT_GENERATOR, GeneratorSettings
from rag.core.files import file_sha256
from rag.models.card import TrainingCard
from rag.retrieval.protocols import EvidenceSearch
from rag.training.finetune.data import (
    Budgets,
    Example,
    MedQuADQuery,
    Split,
    abstain_example,
    load_medquad_treatment,
    medquad_example,
    pubmedqa_conclusion_example,
    pubmedqa_gold_example,
    pubmedqa_rag_example,
    split_medquad,
    split_pubmedqa,
    training_docs,
)
from rag.training.finetune.evaluate import SETTINGS, ClosedFormResult, ScoringGenerator, closed_form_eval, rebias
from rag.training.finetune.train import TrainConfig, attach_lora, encode, save_adapter, train


@dataclass(frozen=True)
class DataPaths:
    pubmedqa: Path  # native PubMedQA file (pqal_dev.json)
    medquad: Path  # MedQuAD BEIR folder (queries.jsonl, qrels/dev.tsv)

    @classmethod
    def under(cls, root: Path) -> DataPaths:
        return cls(root / "pubmedqa" / "pqal_dev.json", root / "retrieval" / "medquad")


@dataclass(frozen=True)
class Mix:
    """How many examples of each kind; the PubMedQA counts come from the split."""

    validation: int = 150
    calibration: int = 50
    rag_share: float = 0.25  # share of training PubMedQA items also shown with retrieved evidence
    conclusion_share: float = 0.0  # share also shown with results + their own conclusion (see data.py)
    medquad: int = 200
    abstain: int = 50
    medquad_validation: int = 60  # MedQuAD treatment queries held out for the generation metrics
    objective: Objective = "accuracy"  # what the label biases are fitted for (accuracy | macro_f1 | nll)


@dataclass(frozen=True)
class FinetuneRequest:
    out: Path
    data: DataPaths
    index_dir: Path  # an index over the PubMedQA + MedQuAD corpora (real retrieved evidence)
    base: str = DEFAULT_GENERATOR
    config: TrainConfig = field(default_factory=TrainConfig)
    budgets: Budgets = field(default_factory=Budgets)
    mix: Mix = field(default_factory=Mix)
    progress: bool = True
    before_metrics: bool = True  # score the base model on the calibration items too (costs a few minutes)
    prompts_dir: str | None = None


@dataclass
class Prepared:
    items: list[PubMedQAItem]
    split: Split
    medquad_train: list[MedQuADQuery]
    medquad_validation: list[MedQuADQuery]
    examples: list[Example] = field(default_factory=list)


def prepare(data: DataPaths, seed: int, mix: Mix) -> Prepared:
    items = load_pubmedqa(data.pubmedqa)
    split = split_pubmedqa(items, seed=seed, validation=mix.validation, calibration=mix.calibration)
    medquad_train, medquad_validation = split_medquad(
        load_medquad_treatment(data.medquad), seed=seed, validation=mix.medquad_validation
    )
    return Prepared(items, split, list(medquad_train), list(medquad_validation))


def build_examples(
    prepared: Prepared,
    searcher: EvidenceSearch,
    count_tokens: Callable[[str], int],
    *,
    seed: int,
    mix: Mix,
    budgets: Budgets,
    templates: tuple[PromptTemplate, PromptTemplate],
) -> list[Example]:
    """Every training example, in a seeded order; none shows a validation or calibration abstract."""
    pubmedqa_template, answer_template = templates
    rng = random.Random(seed)
    allowed = training_docs(prepared.split.train)
    train_items = [i for i in prepared.items if i.pmid in set(prepared.split.train)]
    examples = [pubmedqa_gold_example(i, pubmedqa_template, count_tokens, budgets) for i in train_items]
    rag_items = rng.sample(train_items, round(len(train_items) * mix.rag_share))
    examples += [
        pubmedqa_rag_example(i, pubmedqa_template, searcher, allowed, count_tokens, budgets) for i in rag_items
    ]
    conclusion_items = rng.sample(train_items, round(len(train_items) * mix.conclusion_share))
    examples += [pubmedqa_conclusion_example(i, pubmedqa_template, count_tokens, budgets) for i in conclusion_items]
    queries = list(prepared.medquad_train)
    rng.shuffle(queries)
    medquad = _first(
        (medquad_example(q, answer_template, searcher, allowed, count_tokens, budgets, rng) for q in queries),
        mix.medquad,
    )
    answered = {e.source_id for e in medquad}
    rest = [q for q in queries if q.query_id not in answered]  # abstention questions differ from answered ones
    abstain = _first(
        (abstain_example(q, answer_template, searcher, allowed, count_tokens, budgets) for q in rest), mix.abstain
    )
    examples += medquad + abstain
    rng.shuffle(examples)
    return examples


def _first(candidates: Any, n: int) -> list[Example]:
    found: list[Example] = []
    for example in candidates:
        if len(found) >= n:
            break
        if example is not None:
            found.append(example)
    return found


def data_facts(request: FinetuneRequest, prepared: Prepared, examples: Sequence[Example]) -> dict[str, Any]:
    files = [request.data.pubmedqa, request.data.medquad / "queries.jsonl", request.data.medquad / "qrels/dev.tsv"]
    manifest = request.index_dir / "manifest.json"
    if manifest.exists():
        files.append(manifest)
    return {
        "files": {str(p): file_sha256(p) for p in files},
        "index_dir": str(request.index_dir),
        "split": prepared.split.to_json(),
        "medquad_validation_queries": [q.query_id for q in prepared.medquad_validation],
        "counts": {
            "examples": len(examples),
            "by_kind": dict(Counter(e.kind for e in examples)),
            "pubmedqa_labels": dict(Counter(e.label for e in examples if e.label)),
            "pubmedqa_items": {
                "train": len(prepared.split.train),
                "calibration": len(prepared.split.calibration),
                "validation": len(prepared.split.validation),
            },
        },
        "mix": asdict(request.mix),
    }


def calibrate(
    generator: ScoringGenerator,
    items: Sequence[PubMedQAItem],
    template: PromptTemplate,
    budgets: Budgets,
    searcher: EvidenceSearch,
    *,
    objective: Objective,
    progress: bool,
) -> dict[str, tuple[ClosedFormResult, list[float]]]:
    """Closed-form results on held-out training items in both settings, and the biases fitted on them."""
    gold = [i.decision for i in items]
    index = {label: n for n, label in enumerate(PUBMEDQA_LABELS)}
    fitted: dict[str, tuple[ClosedFormResult, list[float]]] = {}
    for setting in SETTINGS:
        result = closed_form_eval(generator, items, setting, template, budgets, searcher=searcher, progress=progress)
        bias = fit_biases(result.loglik, [index[g] for g in gold], objective=objective)
        fitted[setting] = (result, bias)
    return fitted


def _metrics(fitted: dict[str, tuple[ClosedFormResult, list[float]]], gold: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting, (result, bias) in fitted.items():
        out[f"pubmedqa-{setting}"] = result.summary()
        out[f"pubmedqa-{setting}-with-fitted-bias (in-sample)"] = rebias(result, gold, bias).summary()
    return out


def _training_copy(model: Any, bf16: bool) -> Any:
    """The base weights to train against: bf16 matmuls run ~3x faster than fp32 on CPUs with AVX512-BF16 or AMX,
    while the LoRA weights stay fp32 (peft keeps adapters in fp32 over a bf16 base)."""
    import torch

    return model.to(torch.bfloat16) if bf16 else model


def run_finetune(request: FinetuneRequest) -> TrainingCard:
    from rag.models.generators.local import load_local_generator
    from rag.retrieval.search import Searcher

    started = time.perf_counter()
    config, mix, budgets = request.config, request.mix, request.budgets
    prepared = prepare(request.data, config.seed, mix)
    templates = (load_template("pubmedqa", request.prompts_dir), load_template("answer", request.prompts_dir))
    base = load_local_generator(GeneratorSettings(model=request.base, adapter=None, threads=config.threads))
    searcher = Searcher.load(request.index_dir)
    examples = build_examples(
        prepared, searcher, base.count_tokens, seed=config.seed, mix=mix, budgets=budgets, templates=templates
    )
    timings = {"prepare_s": time.perf_counter() - started}
    calibration_items = [i for i in prepared.items if i.pmid in set(prepared.split.calibration)]
    gold = [i.decision for i in calibration_items]
    metrics: dict[str, Any] = {}
    if request.before_metrics:
        mark = time.perf_counter()
        before = calibrate(
            base, calibration_items, templates[0], budgets, searcher, objective=mix.objective, progress=request.progress
        )
        metrics["before"] = _metrics(before, gold)
        timings["before_s"] = time.perf_counter() - mark
    encoded = [encode(base.tokenizer, e, label_weight=config.label_weight) for e in examples]
    model = attach_lora(_training_copy(base.model, config.bf16), config.lora, config.seed)
    result = train(model, encoded, config, progress=request.progress)
    timings["train_s"] = result.seconds
    size = save_adapter(model, request.out, base_name=base.name)
    mark = time.perf_counter()
    # Scored as the engine will run it: the fp32 base with the saved adapter merged in.
    tuned = load_local_generator(
        GeneratorSettings(model=request.base, adapter=str(request.out), threads=config.threads)
    )
    after = calibrate(
        tuned, calibration_items, templates[0], budgets, searcher, objective=mix.objective, progress=request.progress
    )
    metrics["after"] = _metrics(after, gold)
    timings["after_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    card = TrainingCard(
        base_model=base.name,
        seed=config.seed,
        config=config.to_json(),
        budgets=asdict(budgets),
        data=data_facts(request, prepared, examples),
        timings=timings,
        metrics=metrics,
        calibration={
            f"pubmedqa-{s}": {
                "labels": list(PUBMEDQA_LABELS),
                "bias": b,
                "fitted_on": "calibration split (held out of training)",
                "objective": mix.objective,
            }
            for s, (_, b) in after.items()
        },
        adapter={
            "files": ["adapter_config.json", "adapter_model.safetensors"],
            "weights_bytes": size,
            "dtype": "float16",
        },
        training={
            "steps": result.steps,
            "examples_seen": result.examples_seen,
            "skipped_too_long": result.skipped_too_long,
            "first_loss": result.first_loss,
            "last_loss": result.last_loss,
            "losses": [round(x, 4) for x in result.losses],
        },
    )
    card.write(request.out)
    return card
