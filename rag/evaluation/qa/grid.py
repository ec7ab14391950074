"""The evaluation grid: a YAML file of axes, validated strictly, expanded into configurations with stable ids.

    templates: [pubmedqa]          # prompt templates (prompts/templates.toml); default: the format's own
    shots: [0, 3]                  # worked examples per prompt
    selectors: [semantic]          # random | semantic | mmr (from `pool`) | template (its curated examples)
    pool: {path: ../shared/data/pubmedqa/pqal_dev.json}
    retrieval: [{mode: none}, {mode: hybrid, k: 3}]
    settings: [gold, retrieved]    # the dataset's own context, or what retrieval returns
    closed_book: false             # true: also run setting retrieved with retrieval none (no context at all)
    generators: [{name: base, adapter: none}, {name: tuned, label_bias: card}]  # adapter: default unless set
    scoring: [likelihood]          # likelihood (closed-form label scores) | generate (parse generated text)

Unknown keys anywhere are errors. A configuration's id hashes everything that decides its predictions
(including the template files, the pool and the index it reads), so a re-run resumes exactly the items whose
inputs did not change.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.core.config import GeneratorSettings, Settings, answer_template
from rag.core.errors import ConfigError
from rag.datasets.qa import Format
from rag.models.card import CARD_NAME, read_card

Selector = Literal["random", "semantic", "mmr", "template"]
RetrievalMode = Literal["none", "bm25", "dense", "hybrid"]
ContextSetting = Literal["gold", "retrieved"]
Scoring = Literal["likelihood", "generate"]
POOL_SELECTORS: frozenset[str] = frozenset({"random", "semantic", "mmr"})
# Generator settings that change how a model is reached or how fast it runs, never what it answers: left out of
# configuration ids so that, say, more threads on a re-run still resumes the finished items.
OPERATIONAL_FIELDS = frozenset({"threads", "timeout_s", "retries", "api_key_env", "allow_download"})
DEFAULT_TEMPLATES: dict[str, str] = {"pubmedqa": "pubmedqa", "mirage": "mcq"}  # kqa: settings.answer.template


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSpec(_Strict):
    path: str  # a labelled file in the dataset's own format
    subset: str | None = None
    # evaluation_set: no item being evaluated is ever an example; item: only the item itself is left out.
    exclude: Literal["evaluation_set", "item"] = "evaluation_set"


class RetrievalSpec(_Strict):
    mode: RetrievalMode = "hybrid"
    k: int = Field(3, ge=1, le=50)


class GeneratorSpec(GeneratorSettings):
    """Generator settings (see `rag.core.config.GeneratorSettings`) plus a name for tables and the label bias."""

    name: str = Field("default", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.+-]+$")
    # card: add the per-label biases fitted for closed-form scoring, read from the adapter's training card.
    label_bias: Literal["none", "card"] = "none"

    def settings(self) -> GeneratorSettings:
        return GeneratorSettings.model_validate(self.model_dump(exclude={"name", "label_bias"}))


class Budgets(_Strict):
    # The question's own turn. None: for closed-form label scoring with an adapter whose training card records
    # the budget its labels were trained and calibrated at, that budget; otherwise answer.max_prompt_tokens.
    max_prompt_tokens: int | None = Field(None, ge=256)
    example_prompt_tokens: int = Field(320, ge=64)  # each worked example's turn (its context is cut to fit)
    max_new_tokens: int | None = Field(None, ge=1)  # generate scoring; None: generator.max_new_tokens


class Bootstrap(_Strict):
    resamples: int = Field(1000, ge=100, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


class Grid(_Strict):
    seed: int = 13
    templates: list[str] | None = None
    shots: list[int] = Field(default_factory=lambda: [0])
    selectors: list[Selector] = Field(default_factory=lambda: list[Selector](["random"]))
    mmr_lambda: float = Field(0.5, ge=0.0, le=1.0)
    pool: PoolSpec | None = None
    retrieval: list[RetrievalSpec] | None = None  # None: none with gold context, else the engine's retrieval
    settings: list[ContextSetting] | None = None  # None: gold where the dataset has it, retrieved otherwise
    closed_book: bool = False  # run setting "retrieved" with retrieval "none" (questions with no context)
    generators: list[GeneratorSpec] = Field(default_factory=lambda: [GeneratorSpec()])
    scoring: list[Scoring] | None = None  # None: likelihood for closed-form questions, generate otherwise
    budgets: Budgets = Budgets()
    bootstrap: Bootstrap = Bootstrap()
    index: str | None = None  # the index retrieval reads (the CLI's --index overrides it)
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _axes(self) -> Grid:
        for name in ("shots", "selectors", "generators"):
            if not getattr(self, name):
                raise ValueError(f"{name} must list at least one value")
        if any(s < 0 or s > 16 for s in self.shots):
            raise ValueError("shots must be between 0 and 16")
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique, got {names}")
        return self


@dataclass(frozen=True)
class RunConfig:
    """One cell of the grid, fully resolved."""

    format: Format
    template: str
    shots: int
    selector: str  # "none" at 0 shots
    retrieval: RetrievalMode
    k: int  # 0 without retrieval
    setting: ContextSetting
    generator: GeneratorSpec
    scoring: Scoring
    seed: int
    budgets: Budgets
    mmr_lambda: float
    fingerprints: Mapping[str, str] = field(default_factory=dict)  # template/pool/index/adapter content hashes

    @property
    def config_id(self) -> str:
        identity = self.to_json(with_id=False)
        identity["generator"] = {k: v for k, v in identity["generator"].items() if k not in OPERATIONAL_FIELDS}
        payload = json.dumps(identity, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def context_label(self) -> str:
        if self.setting == "gold":
            return "gold" if self.retrieval == "none" else f"gold+{self.retrieval}@{self.k}"
        return f"{self.retrieval}@{self.k}" if self.retrieval != "none" else "closed-book"

    @property
    def label(self) -> str:
        shots = f"{self.shots}-shot" + (f" {self.selector}" if self.shots else "")
        return f"{self.template} | {shots} | {self.context_label} | {self.generator.name} | {self.scoring}"

    def to_json(self, *, with_id: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": self.format,
            "template": self.template,
            "shots": self.shots,
            "selector": self.selector,
            "retrieval": self.retrieval,
            "k": self.k,
            "setting": self.setting,
            "generator": self.generator.model_dump(mode="json"),
            "scoring": self.scoring,
            "seed": self.seed,
            "budgets": self.budgets.model_dump(mode="json"),
            "mmr_lambda": self.mmr_lambda if self.selector == "mmr" else None,
            "fingerprints": dict(sorted(self.fingerprints.items())),
        }
        if with_id:
            data = {"id": self.config_id, "label": self.label, **data}
        return data


@dataclass(frozen=True)
class Skipped:
    label: str
    reason: str


def load_grid(path: str | Path) -> Grid:
    """A grid from YAML (safe_load only); unknown keys and bad values are reported with their dotted path."""
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the grid file ({exc.strerror}); check --config") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc})") from exc
    return grid_from_mapping(data if data is not None else {}, origin=str(file))


def grid_from_mapping(data: Any, *, origin: str = "grid") -> Grid:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a grid is a mapping of axes (templates, shots, ...) at the top level")
    try:
        return Grid.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{origin}: invalid grid: {problems}. See benchmarks/grids/ for a complete example.") from exc


def default_grid(fmt: Format, settings: Settings, *, seed: int = 13) -> Grid:
    """Exactly one configuration: the engine's defaults, with gold context where the format has it."""
    has_gold = fmt == "pubmedqa"
    engine_retrieval = RetrievalSpec(mode=settings.retrieval.mode, k=settings.answer.evidence_k)
    retrieval = RetrievalSpec(mode="none") if has_gold else engine_retrieval
    return Grid(
        seed=seed,
        templates=[default_template(fmt, settings)],
        shots=[0],
        retrieval=[retrieval],
        settings=["gold" if has_gold else "retrieved"],
        generators=[GeneratorSpec.model_validate({**settings.generator.model_dump(), "name": "default"})],
    )


def default_template(fmt: Format, settings: Settings) -> str:
    return DEFAULT_TEMPLATES.get(fmt) or answer_template(settings.answer, settings.generator)


def expand(
    grid: Grid,
    fmt: Format,
    settings: Settings,
    fingerprints: Mapping[str, str] | None = None,
) -> tuple[list[RunConfig], list[Skipped]]:
    """Every valid configuration in a stable order (generator-major, so each model loads once), and the skipped
    combinations with why. `fingerprints` maps "template:<name>", "pool", "index", "adapter:<name>" to hashes."""
    prints = dict(fingerprints or {})
    # Fusion weights, depth and the rest of the retrieval settings decide what retrieval configurations see.
    retrieval_settings = json.dumps(settings.retrieval.model_dump(mode="json"), sort_keys=True)
    prints.setdefault("retrieval", hashlib.sha256(retrieval_settings.encode()).hexdigest()[:16])
    closed = fmt != "kqa"
    templates = grid.templates or [default_template(fmt, settings)]
    settings_axis: Sequence[ContextSetting] = grid.settings or (["gold"] if fmt == "pubmedqa" else ["retrieved"])
    retrieval = grid.retrieval or [
        *([RetrievalSpec(mode="none")] if "gold" in settings_axis else []),
        *(
            [RetrievalSpec(mode=settings.retrieval.mode, k=settings.answer.evidence_k)]
            if "retrieved" in settings_axis
            else []
        ),
    ]
    scoring: Sequence[Scoring] = grid.scoring or (["likelihood"] if closed else ["generate"])
    configs: dict[str, RunConfig] = {}
    skipped: list[Skipped] = []
    axes = itertools.product(grid.generators, templates, scoring, settings_axis, retrieval, grid.shots, grid.selectors)
    for generator, template, score, setting, spec, shots, selector in axes:
        config = RunConfig(
            format=fmt,
            template=template,
            shots=shots,
            selector=selector if shots else "none",
            retrieval=spec.mode,
            k=spec.k if spec.mode != "none" else 0,
            setting=setting,
            generator=generator,
            scoring=score,
            seed=grid.seed,
            budgets=_resolved_budgets(grid.budgets, settings, generator, score, setting),
            mmr_lambda=grid.mmr_lambda,
            fingerprints=_fingerprints_for(prints, template, generator.name, spec.mode, shots, selector),
        )
        reason = _invalid(config, grid)
        if reason:
            skipped.append(Skipped(config.label, reason))
        else:
            configs.setdefault(config.config_id, config)
    if not configs:
        reasons = "; ".join(sorted({s.reason for s in skipped}))
        raise ConfigError(f"the grid has no valid configuration for format {fmt}: {reasons}")
    _check_pool(list(configs.values()), grid)
    return list(configs.values()), _unique_skips(skipped)


def _fingerprints_for(
    prints: Mapping[str, str], template: str, generator: str, mode: str, shots: int, selector: str
) -> dict[str, str]:
    wanted = {f"template:{template}": "template", f"adapter:{generator}": "adapter"}
    if mode != "none":
        wanted["index"] = "index"
        wanted["retrieval"] = "retrieval"
    if shots and selector in POOL_SELECTORS:
        wanted["pool"] = "pool"
    return {name: prints[key] for key, name in wanted.items() if key in prints}


def _resolved_budgets(
    budgets: Budgets, settings: Settings, generator: GeneratorSpec, scoring: Scoring, setting: ContextSetting
) -> Budgets:
    """Defaults filled in from the settings, so a configuration's id changes when what it runs with changes."""
    trained = _trained_budget(generator, setting) if scoring == "likelihood" else None
    return budgets.model_copy(
        update={
            "max_prompt_tokens": budgets.max_prompt_tokens or trained or settings.answer.max_prompt_tokens,
            # Label scoring generates nothing: a new-token cap must not make its results look stale.
            "max_new_tokens": (budgets.max_new_tokens or generator.max_new_tokens) if scoring == "generate" else None,
        }
    )


def _trained_budget(generator: GeneratorSpec, setting: ContextSetting) -> int | None:
    """The prompt budget the adapter's closed-form labels were trained and calibrated at (its training card).

    Scoring at the budget the labels were learnt at keeps prompts like the training ones, and a shorter prompt is
    read faster: the packaged adapter's 384-token gold prompts score the 500 PubMedQA items in 224 s against 430 s
    at the 2,048-token engine budget."""
    adapter = generator.adapter_path()
    if adapter is None or not (adapter / CARD_NAME).is_file():
        return None
    budgets = read_card(adapter).get("budgets", {})
    value = budgets.get("gold_prompt_tokens" if setting == "gold" else "rag_prompt_tokens")
    return value if isinstance(value, int) and value >= 256 else None


def _invalid(config: RunConfig, grid: Grid) -> str | None:
    if config.setting == "gold" and config.format != "pubmedqa":
        return f"{config.format} has no gold context; use setting 'retrieved'"
    if config.setting == "gold" and config.retrieval != "none":
        return "gold context is shown on its own; retrieval runs with setting 'retrieved'"
    if config.setting == "retrieved" and config.retrieval == "none" and not grid.closed_book:
        return "no context at all (closed-book); set closed_book: true to run it"
    if config.scoring == "likelihood" and config.format == "kqa":
        return "K-QA answers are open-ended; they are scored by generating"
    if config.scoring == "likelihood" and config.generator.kind not in ("auto", "local", "llamacpp"):
        return f"generator {config.generator.name!r} ({config.generator.kind}) cannot score labels; use 'generate'"
    if config.generator.kind == "extractive":
        return f"generator {config.generator.name!r}: the extractive answerer has no prompt to evaluate"
    if config.format == "kqa" and config.shots and config.selector in POOL_SELECTORS:
        return "K-QA few-shot uses the template's curated examples: selector 'template' with 'answer-few-shot'"
    if config.generator.label_bias == "card" and config.generator.adapter_path() is None:
        return f"generator {config.generator.name!r}: label_bias 'card' needs an adapter with a training card"
    return None


def _check_pool(configs: Sequence[RunConfig], grid: Grid) -> None:
    needs = [c for c in configs if c.shots and c.selector in POOL_SELECTORS]
    if needs and grid.pool is None:
        raise ConfigError(
            f"{len(needs)} configurations draw {needs[0].selector} examples but the grid names no pool: add "
            "pool: {path: FILE} (a labelled file; evaluation items are never their own examples) or pass --pool"
        )


def _unique_skips(skipped: Sequence[Skipped]) -> list[Skipped]:
    return list({(s.label, s.reason): s for s in skipped}.values())
