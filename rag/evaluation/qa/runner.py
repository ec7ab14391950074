"""run_grid: every configuration of a grid over every item, resumable, then the summary and plots.

    result = run_grid("pqal_dev.json", "pubmedqa", "runs/pqa", grid=load_grid("grid.yaml"), index="indexes/pqa")

Configurations run generator by generator, so each model is loaded once and released before the next. Every
finished item is appended to predictions.jsonl and synced; re-running the same command skips finished items
and retries failed ones. A configuration that cannot start (no index, a missing bias) marks its items failed
with the reason and the run goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.answering.closed_form import PUBMEDQA_LABELS
from rag.answering.prompts import PromptTemplate, load_template
from rag.checking.verdict import SupportJudge
from rag.core.config import Settings
from rag.core.errors import ClinragError, ConfigError
from rag.core.files import now_iso
from rag.datasets.qa import QAItem, Readout, dataset_facts, read_dataset, select_items
from rag.evaluation.qa.evaluate import ItemEvaluator
from rag.evaluation.qa.grid import GeneratorSpec, Grid, PoolSpec, RunConfig, Skipped, default_grid, default_template
from rag.evaluation.qa.grid import expand as expand_grid
from rag.evaluation.qa.prompting import PromptBuilder
from rag.evaluation.qa.records import Key, Prediction, PredictionStore
from rag.evaluation.qa.report import write_reports
from rag.evaluation.qa.selectors import ExampleSelector, Pool, build_pool
from rag.evaluation.qa.summary import ConfigSummary, summarise
from rag.evaluation.qa.versions import fingerprints, package_versions
from rag.models.embed import Embedder, LazyEmbedder
from rag.models.generators.base import Generator

RUN_FORMAT = "clinrag-eval-qa/1"


@dataclass(frozen=True)
class RunResult:
    out: Path
    configs: tuple[RunConfig, ...]
    summaries: tuple[ConfigSummary, ...]
    skipped: tuple[Skipped, ...]
    evaluated: int  # items run by this call
    resumed: int  # items found finished on disk and skipped
    failed: int  # items whose latest attempt failed
    seconds: float  # wall time of this call
    loop_seconds: float  # time spent evaluating items (models loaded on the way included)
    files: tuple[Path, ...] = ()

    @property
    def items_per_second(self) -> float:
        return self.evaluated / self.loop_seconds if self.loop_seconds > 0 else 0.0


@dataclass
class _Resources:
    """Indexes and models, loaded on first use and shared by every configuration that needs them."""

    settings: Settings
    index: Path | None
    embedder_: Embedder | None = None
    checker_: SupportJudge | None = None
    preloaded: Mapping[str, Generator] = field(default_factory=dict)
    searcher_: Any = None
    loaded: dict[str, Generator] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # grid name -> the model as the backend names it
    selectors: dict[tuple[int, float, bool], ExampleSelector] = field(default_factory=dict)

    def selector(self, pool: Pool, config: RunConfig, items: Sequence[QAItem]) -> ExampleSelector:
        """One selector per seed and MMR weight, so the pool is embedded once for every configuration."""
        vectors = config.selector != "random"
        key = (config.seed, config.mmr_lambda, vectors)
        if key not in self.selectors:
            self.selectors[key] = ExampleSelector(
                pool, config.seed, self.embedder() if vectors else None, config.mmr_lambda
            )
        self.selectors[key].warm(items)
        return self.selectors[key]

    def searcher(self) -> Any:
        if self.searcher_ is None and self.index is not None:
            from rag.retrieval.search import Searcher

            self.searcher_ = Searcher.load(self.index, self.embedder_, self.settings.retrieval)
        return self.searcher_

    def embedder(self) -> Embedder:
        if self.embedder_ is None:
            searcher = self.searcher()
            dense = searcher.retrievers["dense"] if searcher is not None else None
            self.embedder_ = dense.embedder if dense is not None else LazyEmbedder(self.settings.index.embedder)
        return self.embedder_

    def checker(self) -> SupportJudge:
        if self.checker_ is None:
            from rag.checking.verifier import load_support_checker

            # The engine's own checker (the trained cross-encoder by default), as the K-QA paper scores with NLI.
            self.checker_ = load_support_checker(self.settings.answer, self.embedder())
        return self.checker_

    def generator(self, spec: GeneratorSpec) -> Generator:
        if spec.name in self.preloaded:
            generator = self.preloaded[spec.name]
        elif spec.name in self.loaded:
            generator = self.loaded[spec.name]
        else:
            from rag.models.generators import load_generator

            self.loaded.clear()  # one model in memory at a time
            generator = self.loaded[spec.name] = load_generator(spec.settings())
        self.names[spec.name] = generator.name
        return generator


def run_grid(
    dataset: str | Path,
    fmt: str,
    out: str | Path,
    *,
    grid: Grid | None = None,
    subset: str | None = None,
    settings: Settings | None = None,
    index: str | Path | None = None,
    pool: str | Path | None = None,
    item_ids: Sequence[str] | None = None,
    limit: int | None = None,
    generators: Mapping[str, Generator] | None = None,
    embedder: Embedder | None = None,
    checker: SupportJudge | None = None,
    progress: bool = True,
    plots: bool = True,
) -> RunResult:
    """Evaluate `grid` (default: the engine's single default configuration) on a native dataset file into `out`.

    `generators` maps grid generator names to ready generators (tests, notebooks); others are loaded from their
    settings. `embedder` and `checker` replace the default MiniLM embedder and support checker.
    """
    started = time.perf_counter()
    settings = settings or Settings()
    plan = _plan(dataset, fmt, out, grid, subset, settings, index, pool, item_ids, limit)
    store = PredictionStore(plan.run_dir / "predictions.jsonl")
    latest = store.read().predictions
    _write_json(plan.run_dir / "config.json", plan.meta)
    resources = _Resources(settings, plan.index, embedder, checker, generators or {})
    pool_items = _load_pool(plan.grid.pool, plan.readout, plan.items) if _needs_pool(plan.configs) else None
    pending = [(c, i) for c in plan.configs for i in plan.items if not _finished(latest, c, i)]
    loop = _Loop(resources, plan.templates, settings, pool_items, store, latest)
    loop_started = time.perf_counter()
    try:
        loop.run(pending, progress)
    except KeyboardInterrupt:  # what finished is on disk; the summary of it is written before stopping
        _summarise(plan, latest, plots=False)
        raise
    loop_seconds = time.perf_counter() - loop_started
    summaries, files = _summarise(plan, latest, plots=plots)
    failed = sum(s.failed for s in summaries)
    resumed = len(plan.configs) * len(plan.items) - len(pending)
    plan.meta["models"] = _models(plan.meta["models"], resources, loop.biases)
    plan.meta["runs"].append(
        {
            "finished_at": now_iso(),
            "evaluated": loop.evaluated,
            "resumed": resumed,
            "failed": failed,
            "seconds": round(time.perf_counter() - started, 2),
            "loop_seconds": round(loop_seconds, 2),
        }
    )
    _write_json(plan.run_dir / "config.json", plan.meta)
    seconds = time.perf_counter() - started
    return RunResult(
        plan.run_dir,
        tuple(plan.configs),
        summaries,
        tuple(plan.skipped),
        loop.evaluated,
        resumed,
        failed,
        seconds,
        loop_seconds,
        files,
    )


@dataclass(frozen=True)
class _Plan:
    readout: Readout
    items: list[QAItem]
    grid: Grid
    configs: list[RunConfig]
    skipped: list[Skipped]
    templates: dict[str, PromptTemplate]
    index: Path | None
    run_dir: Path
    meta: dict[str, Any]


def _plan(
    dataset: str | Path,
    fmt: str,
    out: str | Path,
    grid: Grid | None,
    subset: str | None,
    settings: Settings,
    index: str | Path | None,
    pool: str | Path | None,
    item_ids: Sequence[str] | None,
    limit: int | None,
) -> _Plan:
    """Everything decided before the first item runs; every input error surfaces here, before any model loads."""
    readout = read_dataset(dataset, fmt, subset)
    grid = _with_pool(grid or default_grid(readout.format, settings), pool)
    items = select_items(readout.items, ids=item_ids, limit=limit or grid.limit)
    index_dir = Path(index) if index is not None else (Path(grid.index) if grid.index else None)
    names = dict.fromkeys(grid.templates or [default_template(readout.format, settings)])
    templates = {name: load_template(name, settings.answer.prompts_dir) for name in names}
    prints = fingerprints(templates, grid, index_dir)
    configs, skipped = expand_grid(grid, readout.format, settings, prints)
    retrieving = [c for c in configs if c.retrieval != "none"]
    if index_dir is None and retrieving:
        raise ConfigError(
            f"{len(retrieving)} configurations retrieve evidence but no index was given; pass --index DIR "
            "(or --corpus FILE to build one), or set index: in the grid"
        )
    run_dir = Path(out)
    previous = _prepare_run_dir(run_dir, readout)
    meta = _run_meta(readout, items, grid, configs, skipped, index_dir, prints)
    meta["runs"] = list(previous.get("runs", []))
    meta["models"] = dict(previous.get("models", {}))
    return _Plan(readout, items, grid, configs, skipped, templates, index_dir, run_dir, meta)


def _summarise(
    plan: _Plan, latest: Mapping[Key, Prediction], *, plots: bool
) -> tuple[tuple[ConfigSummary, ...], tuple[Path, ...]]:
    summaries = tuple(summarise(c, plan.items, latest, plan.grid.bootstrap) for c in plan.configs)
    return summaries, write_reports(plan.run_dir, summaries, plan.skipped, plan.meta["dataset"], plots=plots)


# ---------------------------------------------------------------------------------------------------- the loop


@dataclass
class _Loop:
    resources: _Resources
    templates: Mapping[str, PromptTemplate]
    settings: Settings
    pool: Pool | None
    store: PredictionStore
    latest: dict[Key, Prediction]
    evaluated: int = 0
    biases: dict[str, list[float] | None] = field(default_factory=dict)

    _evaluators: dict[str, ItemEvaluator | str] = field(default_factory=dict)  # config id -> evaluator or why not

    def run(self, pending: Sequence[tuple[RunConfig, QAItem]], progress: bool) -> None:
        from tqdm import tqdm

        with tqdm(total=len(pending), unit="item", disable=not progress, dynamic_ncols=True, file=sys.stderr) as bar:
            for generator, group in _by_generator(pending):
                items = list(dict.fromkeys(item for _, item in group))
                for config, item in _item_major(group):
                    bar.set_description(f"{generator} {item.item_id}"[:40])
                    prediction = self._predict(config, item, items)
                    self.store.append(prediction)
                    self.latest[prediction.key] = prediction
                    self.evaluated += 1
                    bar.update(1)
                    if prediction.status == "failed":
                        bar.set_postfix_str(f"last failure: {prediction.item_id}", refresh=False)

    def _predict(self, config: RunConfig, item: QAItem, items: Sequence[QAItem]) -> Prediction:
        evaluator = self._evaluators.get(config.config_id)
        if evaluator is None:
            try:
                evaluator = _evaluator(config, self.resources, self.templates, self.settings, self.pool, items)
                self.biases[config.config_id] = list(evaluator.bias) if evaluator.bias is not None else None
            except ClinragError as exc:  # the configuration cannot start: its items are failed, the run goes on
                evaluator = f"{type(exc).__name__}: {exc}"
            self._evaluators[config.config_id] = evaluator
        return _failed(config, item, evaluator) if isinstance(evaluator, str) else evaluator.evaluate(item)


def _by_generator(pending: Sequence[tuple[RunConfig, QAItem]]) -> Iterator[tuple[str, list[tuple[RunConfig, QAItem]]]]:
    """Pending work per generator, in grid order: each model is loaded once."""
    groups: dict[str, list[tuple[RunConfig, QAItem]]] = {}
    for config, item in pending:
        groups.setdefault(config.generator.name, []).append((config, item))
    yield from groups.items()


def _item_major(group: Sequence[tuple[RunConfig, QAItem]]) -> list[tuple[RunConfig, QAItem]]:
    """Every configuration of an item before the next item: a run stopped early has comparable partial results."""
    order = {item.item_id: n for n, item in enumerate(dict.fromkeys(item for _, item in group))}
    return sorted(group, key=lambda pair: order[pair[1].item_id])  # stable: grid order within an item


def _evaluator(
    config: RunConfig,
    resources: _Resources,
    templates: Mapping[str, PromptTemplate],
    settings: Settings,
    pool: Pool | None,
    items: Sequence[QAItem],
) -> ItemEvaluator:
    generator = resources.generator(config.generator)
    max_new = config.budgets.max_new_tokens or 0  # resolved by expand(); 0 for label scoring
    wanted = config.budgets.max_prompt_tokens or settings.answer.max_prompt_tokens
    budget = min(wanted, generator.context_window - max(max_new, 8))
    selector = None
    if pool is not None and config.shots and config.selector in ("random", "semantic", "mmr"):
        selector = resources.selector(pool, config, items)
    builder = PromptBuilder(
        config,
        templates[config.template],
        generator.count_tokens,
        budget,
        resources.searcher() if config.retrieval != "none" else None,
        selector,
    )
    checker = resources.checker() if config.scoring == "generate" else None
    return ItemEvaluator(config, builder, generator, checker, max(max_new, 1), _bias(config))


def _bias(config: RunConfig) -> list[float] | None:
    spec = config.generator
    if spec.label_bias != "card" or config.format != "pubmedqa" or config.scoring != "likelihood":
        return None
    from rag.models.card import card_biases, read_card

    adapter = spec.adapter_path()
    assert adapter is not None  # the grid refuses label_bias card without an adapter
    setting = "pubmedqa-gold" if config.setting == "gold" else "pubmedqa-rag"
    bias = card_biases(read_card(adapter), setting, PUBMEDQA_LABELS)
    if bias is None:
        raise ConfigError(
            f"{adapter}: the training card has no {setting} label biases; set label_bias: none for "
            f"generator {spec.name!r} or re-run clinrag finetune"
        )
    return bias


def _failed(config: RunConfig, item: QAItem, reason: str) -> Prediction:
    gold = item.answer if item.closed_form else ""
    return Prediction(config.config_id, item.item_id, item.subset, "failed", gold, error=reason[:500])


def _finished(latest: Mapping[Key, Prediction], config: RunConfig, item: QAItem) -> bool:
    found = latest.get((config.config_id, item.item_id))
    return found is not None and found.status == "ok"


# ---------------------------------------------------------------------------------------------------- inputs


def _with_pool(grid: Grid, pool: str | Path | None) -> Grid:
    if pool is None:
        return grid
    spec = grid.pool.model_copy(update={"path": str(pool)}) if grid.pool else PoolSpec(path=str(pool))
    return grid.model_copy(update={"pool": spec})


def _needs_pool(configs: Sequence[RunConfig]) -> bool:
    return any(c.shots and c.selector in ("random", "semantic", "mmr") for c in configs)


def _load_pool(spec: PoolSpec | None, readout: Readout, items: Sequence[QAItem]) -> Pool:
    assert spec is not None  # expand() refuses pool selectors without a pool
    pool_readout = read_dataset(spec.path, readout.format, spec.subset)
    return build_pool(pool_readout, items, spec.exclude)


def _prepare_run_dir(run_dir: Path, readout: Readout) -> dict[str, Any]:
    """The previous run's config.json (empty for a new folder); refuses a folder holding another dataset's run."""
    config = run_dir / "config.json"
    previous: dict[str, Any] = {}
    if config.exists():
        try:
            previous = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{config}: cannot read the previous run's config ({exc}); use a new --out") from exc
        sha = previous.get("dataset", {}).get("sha256")
        if sha != readout.sha256:
            raise ConfigError(
                f"{run_dir}: holds a run on another dataset (sha256 {str(sha)[:12]}, this one {readout.sha256[:12]}); "
                "use a new --out folder, or delete this one to start over"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    return previous


def _run_meta(
    readout: Readout,
    items: Sequence[QAItem],
    grid: Grid,
    configs: Sequence[RunConfig],
    skipped: Sequence[Skipped],
    index: Path | None,
    prints: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "started_at": now_iso(),
        "dataset": dict(dataset_facts(readout, items)),
        "grid": grid.model_dump(mode="json"),
        "index": {"path": str(index), "manifest_sha256": prints.get("index")} if index else None,
        "pool": {"path": grid.pool.path, "sha256": prints.get("pool"), "exclude": grid.pool.exclude}
        if grid.pool
        else None,
        "configurations": [c.to_json() for c in configs],
        "skipped": [{"label": s.label, "reason": s.reason} for s in skipped],
        "seeds": {
            "grid": grid.seed,
            "bootstrap": f"numpy default_rng({grid.seed}), {grid.bootstrap.resamples} resamples",
            "random_selector": f"sha256('clinrag-shots:{grid.seed}:<item id>')",
        },
        "versions": package_versions(),
        "runs": [],
    }


def _models(
    previous: Mapping[str, Any], resources: _Resources, biases: Mapping[str, list[float] | None]
) -> dict[str, Any]:
    """The models this call used, merged into what earlier (resumed) calls recorded."""
    embedder = resources.embedder_.name if resources.embedder_ is not None else previous.get("embedder")
    return {
        "generators": {**previous.get("generators", {}), **resources.names},
        "embedder": embedder,
        "label_biases": {**previous.get("label_biases", {}), **biases},
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file
