"""What `eval answers --questions` and `--cases` share: the window of the set asked, the engine, the output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from rag.cli.options import index_for

T = TypeVar("T")


def window(items: Sequence[T], args: argparse.Namespace, source: Path, what: str) -> list[T]:
    """The items after --offset, at most --limit of them; ConfigError when none is left."""
    from rag.core.errors import ConfigError

    chosen = list(items)[args.offset :]
    chosen = chosen[: args.limit] if args.limit is not None else chosen
    if not chosen:
        raise ConfigError(f"{source}: no {what} left after --offset {args.offset}")
    return chosen


def warm_engine(args: argparse.Namespace, settings: Any, question: str, patient: Any = None) -> tuple[Any, Path]:
    """The engine over --index (or an index built from --corpus), and that index, after one warm-up question."""
    from rag.answering.engine import Engine

    index = index_for([args.corpus] if args.corpus else [], args.index, settings)
    engine = Engine.load(index, settings=settings)
    engine.ask(question, patient)  # warm-up: model loads are not answer latency
    return engine, index


def described(engine: Any, settings: Any, head: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The JSON a run prints: what was asked (`head`), of which generator and template, then the report."""
    return {
        **head,
        "generator": engine.generator_name,
        "template": engine.template.label,
        "reranked": settings.answer.rerank,
        **report,
    }


def write_records(path: Path | None, rows: list[dict[str, Any]]) -> None:
    if path is not None:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def warn_errors(errors: int, what: str = "question") -> None:
    if errors:
        print(f"warning: {errors} {what}(s) failed; see --records", file=sys.stderr)
