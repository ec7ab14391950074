"""`clinrag ask`: a question (and optionally a patient) in, cited treatment suggestions out."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rag.cli.options import (
    add_adapter_option,
    add_config_option,
    add_dtype_option,
    add_filter_arguments,
    add_generator_options,
    add_index_option,
    add_json_flag,
    add_max_new_tokens_option,
    add_reranker_options,
    filters_from_arguments,
)
from rag.core.config import Settings, load_settings, with_overrides


def register(commands: Any) -> None:
    ask = commands.add_parser(
        "ask",
        help="answer a clinical question with cited treatment suggestions",
        description="Retrieve evidence from an index, ask the generator, and check every citation against the "
        "evidence it names. Exit 0 with suggestions, 1 when the engine abstains, 2 on bad input.",
    )
    ask.add_argument("question", help="the clinical question")
    add_index_option(ask, "index bundle directory", required=True, as_path=False)
    ask.add_argument("--patient", metavar="FILE", help="patient JSON (age, sex, egfr, allergies, medications, ...)")
    add_generator_options(ask)
    add_adapter_option(
        ask, "LoRA adapter folder for a local model; 'default' (the default): the packaged one; 'none': the base"
    )
    ask.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the endpoint's key")
    add_max_new_tokens_option(ask, what="answer length cap (default 128)")
    ask.add_argument("--shots", type=int, metavar="N", help="worked examples in the prompt (default 0)")
    ask.add_argument("--evidence-k", type=int, metavar="N", help="passages retrieved (default 6)")
    ask.add_argument("--int8", action="store_true", default=None, help="int8 dynamic quantisation (local model)")
    add_dtype_option(ask, what="local model weights (bfloat16: faster on AVX512-BF16 CPUs)")
    ask.add_argument(
        "--support-checker",
        metavar="NAME_OR_DIR",
        help='"default" (the packaged cross-encoder), "calibrated", or a folder from `clinrag train verifier`',
    )
    add_reranker_options(ask, no_rerank_help="answer from the fused order (no cross-encoder)")
    ask.add_argument("--log-file", metavar="FILE", help="append the (scrubbed) question and answer here")
    add_config_option(ask, as_path=False)
    add_json_flag(ask, "print the answer as one JSON object")
    add_filter_arguments(ask)
    ask.set_defaults(handler=run_ask)


def settings_from_arguments(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config) if args.config else Settings()
    overrides = {
        "generator.kind": args.generator,
        "generator.model": args.model,
        "generator.adapter": args.adapter,
        "generator.base_url": args.base_url,
        "generator.api_key_env": args.api_key_env,
        "generator.max_new_tokens": args.max_new_tokens,
        "generator.quantize_int8": args.int8,
        "generator.dtype": args.dtype,
        "answer.shots": args.shots,
        "answer.template": args.template,
        "answer.evidence_k": args.evidence_k,
        "answer.log_file": args.log_file,
        "answer.support_checker": args.support_checker,
        "answer.rerank": False if args.no_rerank else (True if args.reranker else None),
        "retrieval.reranker": args.reranker,
        "answer.rerank_prior_scale": args.rerank_prior_scale,
    }
    return with_overrides(settings, {k: v for k, v in overrides.items() if v is not None})


def run_ask(args: argparse.Namespace) -> int:
    from rag.answering.engine import Engine
    from rag.answering.patient import load_patient

    settings = settings_from_arguments(args)
    patient = load_patient(args.patient) if args.patient else None
    engine = Engine.load(args.index, settings=settings)
    answer = engine.ask(args.question, patient=patient, filters=filters_from_arguments(args))
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(answer.to_markdown())
    return 1 if answer.abstained else 0
