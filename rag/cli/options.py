"""What the commands share: exit codes, the data root, the cached index an evaluation builds when given none, and
one `add_*` helper per option that two or more commands spell alike (--json, --config, --index, --out, --data, the
reranker and generator options, --threads, --limit, --seed, --ray, the progress flags, the filters, ...). Where
commands give an option a different default, type or meaning, the helper takes it as a parameter: each command's
flags, defaults and destinations stay what they were. Imports no other `rag.cli` module."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rag.core.config import Settings, default_cache_dir

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


class ArgumentAdder(Protocol):
    """What the helpers below add to: an `argparse.ArgumentParser` or one of its argument groups."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action: ...


GENERATOR_KINDS = ["auto", "local", "llamacpp", "openai", "extractive"]
DTYPES = ["float32", "bfloat16"]
RERANKER_HELP = "the reranker: a folder from `clinrag train reranker` (default: the packaged one)"


def add_json_flag(parser: ArgumentAdder, what: str = "print one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def add_config_option(
    parser: ArgumentAdder,
    *,
    as_path: bool = True,
    metavar: str = "FILE",
    what: str = "settings file (TOML or JSON); flags override it",
) -> None:
    """--config FILE: a `Path`, or the string as given where the command always took it so (`as_path=False`)."""
    parser.add_argument("--config", type=Path if as_path else None, metavar=metavar, help=what)


def add_index_option(parser: ArgumentAdder, what: str, *, required: bool = False, as_path: bool = True) -> None:
    """--index DIR: the index a command searches (required), or one it builds when not given (a `Path`)."""
    parser.add_argument("--index", required=required, type=Path if as_path else None, metavar="DIR", help=what)


def add_reranker_options(
    parser: ArgumentAdder,
    *,
    reranker_help: str = RERANKER_HELP,
    rerank_help: str | None = None,
    no_rerank_help: str | None = None,
    no_rerank_default: bool | None = None,
) -> None:
    """--reranker DIR; --rerank where the command does not rerank by default, --no-rerank where it does.

    --no-rerank defaults to None where settings decide unless the flag is given, to False where a plain
    store_true was always meant; the help says what each flag changes.
    """
    if rerank_help is not None:
        parser.add_argument("--rerank", action="store_true", help=rerank_help)
    parser.add_argument("--reranker", metavar="DIR", help=reranker_help)
    parser.add_argument(
        "--rerank-prior-scale",
        type=float,
        metavar="X",
        help="how far the reranked order leans on the fused order, in units of the reranker's learnt prior "
        "(ask, eval answers: answer.rerank_prior_scale, default 1; search, eval retrieval: "
        "retrieval.rerank_prior_scale, default 3; 0: the model alone)",
    )
    if no_rerank_help is not None:
        parser.add_argument("--no-rerank", action="store_true", default=no_rerank_default, help=no_rerank_help)


def add_generator_options(
    parser: ArgumentAdder,
    *,
    generator_default: str | None = None,
    generator_choices: list[str] | None = GENERATOR_KINDS,
    generator_help: str = "auto (default: llama.cpp when installed, else transformers), local (a Hugging Face model "
    "on transformers), llamacpp (a GGUF on llama.cpp), openai (an OpenAI-compatible endpoint), extractive (no LLM)",
    model_help: str = "generator model: HF id, local folder, GGUF file or 'qwen-coder-1.5b' (llamacpp), "
    "or the endpoint's",
    template_help: str = "prompt template in prompts/templates.toml",
) -> None:
    """--generator, --model, --base-url and --template: which generator answers, and with which prompt."""
    parser.add_argument("--generator", default=generator_default, choices=generator_choices, help=generator_help)
    parser.add_argument("--model", help=model_help)
    parser.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    parser.add_argument("--template", metavar="NAME", help=template_help)


def add_adapter_option(parser: ArgumentAdder, what: str) -> None:
    parser.add_argument("--adapter", metavar="DIR", help=what)


def add_max_new_tokens_option(parser: ArgumentAdder, *, default: int | None = None, what: str) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=default, metavar="N", help=what)


def add_dtype_option(parser: ArgumentAdder, *, default: str | None = None, what: str) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=default, help=what)


def add_threads_option(parser: ArgumentAdder, what: str = "torch threads (default: torch's choice)") -> None:
    parser.add_argument("--threads", type=int, metavar="N", help=what)


def add_limit_option(parser: ArgumentAdder, what: str) -> None:
    parser.add_argument("--limit", type=int, metavar="N", help=what)


def add_seed_option(parser: ArgumentAdder, *, default: int | None, what: str) -> None:
    parser.add_argument("--seed", type=int, default=default, help=what)


def add_out_option(parser: ArgumentAdder, what: str, *, metavar: str = "DIR", as_path: bool = True) -> None:
    """--out DIR (required): where a command writes; a `Path` unless the command always took the string."""
    parser.add_argument("--out", required=True, type=Path if as_path else None, metavar=metavar, help=what)


def add_data_option(parser: ArgumentAdder, what: str) -> None:
    """--data DIR: the shared data folder (None: `default_data_root()`)."""
    parser.add_argument("--data", type=Path, metavar="DIR", help=what)


def add_split_option(parser: ArgumentAdder, what: str = "qrels split inside a BEIR folder (default dev)") -> None:
    parser.add_argument("--split", default="dev", help=what)


def add_format_option(parser: ArgumentAdder, formats: Sequence[str]) -> None:
    parser.add_argument("--format", required=True, choices=formats, help="the file's format")


def add_ray_option(parser: ArgumentAdder, what: str) -> None:
    parser.add_argument("--ray", metavar="ADDRESS", help=what)


def add_no_progress_flag(parser: ArgumentAdder, what: str = "no progress bars") -> None:
    parser.add_argument("--no-progress", action="store_true", help=what)


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """--progress / --quiet into one `progress`: True, False, or None (a bar only on a terminal)."""
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    bar.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")


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
