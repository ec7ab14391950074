"""`clinrag eval qa`: few-shot prompt evaluation grids on PubMedQA, MIRAGE and K-QA files as published."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rag.cli.options import (
    EXIT_FAILURES,
    EXIT_OK,
    add_adapter_option,
    add_config_option,
    add_format_option,
    add_index_option,
    add_json_flag,
    add_limit_option,
    add_no_progress_flag,
    add_out_option,
    add_seed_option,
    index_for,
)
from rag.core.errors import ConfigError
from rag.datasets.qa import FORMATS


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `qa` to the `clinrag eval` sub-commands."""
    qa = commands.add_parser(
        "qa",
        help="few-shot prompt grids: accuracy / macro-F1 with CIs, citations, K-QA completeness",
        description="Evaluate prompt templates x shots x example selection x retrieval x generators on a native "
        "PubMedQA, MIRAGE or K-QA file. Without --config one configuration runs: the engine's defaults, with the "
        "dataset's gold context where it has one and retrieval otherwise. Re-running into the same --out resumes.",
    )
    qa.add_argument("--dataset", required=True, type=Path, metavar="FILE", help="native dataset file")
    add_format_option(qa, FORMATS)
    qa.add_argument("--subset", metavar="NAME", help="one subset of a MIRAGE file (mmlu, medmcqa, ...)")
    add_config_option(qa, metavar="GRID.yaml", what="the grid (see benchmarks/grids/)")
    add_out_option(qa, "run folder (resumed if it exists)", metavar="RUN_DIR")
    add_index_option(qa, "index that retrieval configurations search")
    qa.add_argument(
        "--corpus", nargs="+", type=Path, metavar="FILE", help="without --index: corpus files to index once (cached)"
    )
    qa.add_argument("--pool", type=Path, metavar="FILE", help="example pool file (overrides the grid's pool.path)")
    add_adapter_option(
        qa, "without --config: the generator's LoRA adapter folder ('default': the packaged one; 'none': the base)"
    )
    add_limit_option(qa, "only the first N items")
    qa.add_argument("--items", type=Path, metavar="FILE", help="only the item ids listed in FILE (one per line)")
    qa.add_argument("--settings", type=Path, metavar="FILE", help="engine settings file (.toml or .json)")
    add_seed_option(qa, default=None, what="override the grid's seed")
    qa.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_no_progress_flag(qa)
    add_json_flag(qa)
    qa.set_defaults(handler=run_qa_eval)


def run_qa_eval(args: argparse.Namespace) -> int:
    from rag.core.config import Settings, load_settings, with_overrides
    from rag.evaluation.qa.grid import default_grid, load_grid
    from rag.evaluation.qa.runner import run_grid

    settings = load_settings(args.settings) if args.settings else Settings()
    if args.adapter is not None:
        settings = with_overrides(settings, {"generator.adapter": str(args.adapter)})
    grid = load_grid(args.config) if args.config else default_grid(args.format, settings)
    if args.seed is not None:
        grid = grid.model_copy(update={"seed": args.seed})
    index = args.index or (index_for(list(args.corpus), None, settings, progress=None) if args.corpus else None)
    result = run_grid(
        args.dataset,
        args.format,
        args.out,
        grid=grid,
        subset=args.subset,
        settings=settings,
        index=index,
        pool=args.pool,
        item_ids=_read_ids(args.items) if args.items else None,
        limit=args.limit,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    if args.json:
        print(json.dumps(_json(result), indent=2))
    else:
        print((result.out / "summary.md").read_text(encoding="utf-8"))
        print(
            f"{result.evaluated} items evaluated in {result.loop_seconds:.1f} s ({result.items_per_second:.2f} "
            f"items/s), {result.resumed} resumed, {result.failed} failed; files in {result.out}"
        )
    return EXIT_FAILURES if result.failed else EXIT_OK


def _read_ids(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the item id list ({exc.strerror}); give one id per line") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _json(result: Any) -> dict[str, Any]:
    return {
        "out": str(result.out),
        "evaluated": result.evaluated,
        "resumed": result.resumed,
        "failed": result.failed,
        "seconds": round(result.seconds, 2),
        "items_per_second": round(result.items_per_second, 3),
        "summaries": [s.to_json() for s in result.summaries],
        "files": [str(f) for f in result.files],
    }
