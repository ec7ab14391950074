"""`clinrag train questions`: a language model writes training questions for guideline recommendations."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rag.cli.options import add_generator_options, add_limit_option, add_seed_option, add_threads_option


def register_questions(sub: Any) -> None:
    parser = sub.add_parser(
        "questions",
        help="synthetic training questions for guideline recommendations (for `train reranker --also`)",
        description="Pick recommendations from the 'Major Recommendations' field of Markdown guidelines (the NGC "
        "summaries by default) and have a generator (the 1.5B Qwen by default) write one question each that the "
        "recommendation answers. Writes JSONL lines with text, doc_id, evidence and section, appending as it goes: "
        "run it again to resume. Guidelines named by --exclude files are never read.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="JSONL file to write (appended)")
    parser.add_argument(
        "--guidelines", type=Path, metavar="DIR", help="Markdown guidelines (default ../shared/data/guidelines/ngc)"
    )
    parser.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=None,
        metavar="FILE",
        help="question JSONL whose doc_ids are never used (default: the NGC dev questions, when present); repeat",
    )
    parser.add_argument("--per-guideline", type=int, default=2, metavar="N", help="recommendations per guideline")
    add_limit_option(parser, "at most N recommendations (default 2000)")
    add_generator_options(parser, generator_default="llamacpp", model_help="generator model (default qwen-coder-1.5b)")
    add_threads_option(parser, "generator threads")
    add_seed_option(parser, default=13, what="which recommendations, and the phrasing asked for (default 13)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run_train_questions)


def run_train_questions(args: argparse.Namespace) -> int:
    from rag.cli.options import default_data_root
    from rag.core.config import GeneratorSettings
    from rag.core.errors import ConfigError
    from rag.models.generators import load_generator
    from rag.models.generators.base import ChatMessage
    from rag.training.synthetic_questions import excluded_documents, pick_recommendations, write_questions

    if args.per_guideline < 1 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--per-guideline and --limit must be >= 1")
    guidelines = args.guidelines or default_data_root() / "guidelines" / "ngc"
    if not guidelines.is_dir():
        raise ConfigError(f"{guidelines}: not a folder; give --guidelines DIR (Markdown guidelines)")
    exclusions = args.exclude
    if exclusions is None:
        dev = default_data_root() / "guidelines" / "ngc_questions_dev.jsonl"
        exclusions = [dev] if dev.exists() else []
    exclude = excluded_documents(exclusions)
    recs = pick_recommendations(
        guidelines, exclude=exclude, per_guideline=args.per_guideline, limit=args.limit or 2000, seed=args.seed
    )
    if not recs:
        raise ConfigError(f"{guidelines}: no recommendations found under a '## Major Recommendations' heading")
    settings = GeneratorSettings(
        kind=args.generator, model=args.model or "qwen-coder-1.5b", base_url=args.base_url, threads=args.threads
    )
    generator = load_generator(settings)

    def ask(system: str, user: str) -> str:
        messages = [ChatMessage("system", system), ChatMessage("user", user)]
        return generator.generate(messages, max_new_tokens=80, temperature=args.temperature).text

    started = time.perf_counter()
    stats = write_questions(recs, ask, args.out, seed=args.seed, progress=not args.quiet)
    summary = {
        "out": str(args.out),
        "generator": generator.name,
        "recommendations": len(recs),
        "excluded_guidelines": len(exclude),
        **stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{stats['written']} questions written to {args.out} ({stats['already_done']} already there, "
            f"{stats['rejected']} replies rejected, {stats['failed']} failed) in {summary['seconds']:.0f} s"
        )
    return 0
