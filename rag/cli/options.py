"""What the commands share: exit codes, the filter options, the options every command spelled alike (--json,
--config, --index, the reranker), the data root, and the cached index an evaluation builds when given none."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from rag.core.config import Settings, default_cache_dir

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def add_json_flag(parser: argparse.ArgumentParser, what: str = "print one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML or JSON); flags override it")


def add_reranker_options(parser: argparse.ArgumentParser, *, no_rerank_help: str | None = None) -> None:
    """--reranker DIR, and --no-rerank where the command reranks by default (help says what it changes)."""
    parser.add_argument(
        "--reranker",
        metavar="DIR",
        help="the reranker: a folder from `clinrag train reranker` (default: the packaged one)",
    )
    if no_rerank_help is not None:
        parser.add_argument("--no-rerank", action="store_true", default=None, help=no_rerank_help)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type", action="append", default=[], dest="types", metavar="TYPE",
        help="only guideline, literature or consumer-health (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--source", action="append", default=[], dest="sources", metavar="NAME",
        help="only this issuer or source, e.g. WHO (repeatable)",
    )  # fmt: skip
    parser.add_argument("--year-min", type=int, metavar="YEAR")
    parser.add_argument("--year-max", type=int, metavar="YEAR")
    parser.add_argument(
        "--doc", action="append", default=[], dest="doc_ids", metavar="ID", help="only this document (repeatable)"
    )


def filters_from_arguments(args: argparse.Namespace) -> Any:
    from rag.retrieval.filters import Filters

    return Filters.of(
        types=args.types, sources=args.sources, year_min=args.year_min, year_max=args.year_max, doc_ids=args.doc_ids
    )


def default_data_root() -> Path:
    env = os.environ.get("CLINRAG_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def index_for(corpus: list[Path], index: Path | None, settings: Settings, *, progress: bool | None = None) -> Path:
    """`index`, or an index of `corpus` built (or brought up to date) in the cache."""
    from indexer import build_index  # the CLI composes both packages

    if index is not None:
        return index
    index_dir = cached_index_dir(corpus, settings)
    report = build_index(corpus, index_dir, settings.index, progress=progress)
    for failure in report.failures:
        print(f"warning: {failure.path}: {failure.reason}", file=sys.stderr)
    return index_dir


def cached_index_dir(corpus: list[Path], settings: Settings) -> Path:
    key = json.dumps(
        {"corpus": sorted(str(p.resolve()) for p in corpus), "index": settings.index.model_dump(mode="json")},
        sort_keys=True,
    )
    return default_cache_dir(settings.index) / "eval-indexes" / hashlib.sha256(key.encode()).hexdigest()[:16]
