"""`clinrag eval answers`: ask the engine every judged question and score what its answers cite and say.

Two kinds of judged set: a BEIR folder (`--corpus DIR`: queries, qrels, the judged passages; MedQuAD) or a
guideline question set in the NGC format (`--questions FILE` with `--index DIR` or `--corpus SOURCES`), each
question answered by one recommendation whose key terms a right answer contains."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rag.cli.answer_runs import described, warm_engine, warn_errors, window, write_records
from rag.cli.options import (
    add_config_option,
    add_generator_options,
    add_index_option,
    add_json_flag,
    add_limit_option,
    add_reranker_options,
    add_split_option,
    add_threads_option,
    index_for,
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "answers",
        help="cited precision, hit rate, content-word F1 or answer terms of the engine's answers on judged questions",
        description="Ask the engine each judged question of a BEIR folder (optionally one question type) and "
        "report cited precision (cited references whose document, or a document whose duplicate passage it "
        "absorbed, is judged relevant), hit rate (answers citing a relevant document), abstention and fallback "
        "rates, content-word F1 of the joined suggestions against the judged passage, and p50/p95 seconds. "
        "Precision and hit rate are also given with identical questions pooled (a document judged for another "
        "question of the same text counts; MedQuAD asks many questions once per source). With --questions, a "
        "guideline question set (NGC format) is asked of --index instead.",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="BEIR folder (corpus, queries, qrels); with --questions: the sources to index when --index is not given",
    )
    parser.add_argument(
        "--questions",
        type=Path,
        metavar="FILE",
        help="a guideline question set in the NGC format (JSONL: _id, text, doc_id, evidence, answer_terms): "
        "reports document and evidence recall@10 with and without reranking, hit, cited precision, answer-term "
        "recall and the all-terms rate",
    )
    parser.add_argument(
        "--cases",
        type=Path,
        metavar="FILE",
        help="patient cases (JSONL: _id, text, patient, doc_id, expected, excluded; e.g. "
        "corpora/examples/patient_cases.jsonl), each asked with its patient: reports how often the first suggestion "
        "names an option the patient can take and never one the patient's facts rule out",
    )
    add_split_option(parser)
    add_index_option(parser, "an index of the corpus (built if not given)")
    parser.add_argument("--qtype", metavar="TYPE", help="only questions of this metadata.qtype (e.g. treatment)")
    add_limit_option(parser, "the first N matching questions")
    parser.add_argument(
        "--offset", type=int, default=0, metavar="N", help="skip the first N matching questions (a tuning slice)"
    )
    add_generator_options(
        parser,
        generator_default="extractive",
        generator_choices=None,
        generator_help="extractive (default), auto, local, llamacpp, or openai (with --base-url)",
        model_help="generator model: HF id, local folder, or the endpoint's model name",
        template_help="answer template in prompts/templates.toml (default: answer for the fine-tuned or extractive "
        "generator, answer-select for other models)",
    )
    add_reranker_options(
        parser, no_rerank_help="answer from the fused order (the figure without the reranker)", no_rerank_default=False
    )
    add_threads_option(parser)
    add_config_option(parser)
    parser.add_argument("--records", type=Path, metavar="FILE", help="write one JSON line per question here")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    add_json_flag(parser)
    parser.set_defaults(handler=run_answers_eval)


def run_answers_eval(args: argparse.Namespace) -> int:
    from rag.core.errors import ConfigError

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.offset < 0:
        raise ConfigError(f"--offset must be at least 0, got {args.offset}")
    if args.questions is not None and args.cases is not None:
        raise ConfigError("give --questions FILE or --cases FILE, not both")
    judged = args.questions if args.questions is not None else args.cases
    if judged is None and args.corpus is None:
        raise ConfigError(
            "give --corpus BEIR_DIR (judged passages), or --questions FILE or --cases FILE with --index DIR"
        )
    if judged is not None and args.qtype:
        raise ConfigError("--qtype selects BEIR questions by metadata.qtype; a --questions or --cases set has no types")
    if judged is not None and args.corpus is None and args.index is None:
        raise ConfigError(
            f"{'--questions' if args.questions is not None else '--cases'} needs the index it is asked of: "
            "--index DIR, or --corpus SOURCES to build one"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = _settings(args)
    if args.cases is not None:
        from rag.cli.eval_cases import run_cases

        return run_cases(args, settings)
    return _run_questions(args, settings) if args.questions is not None else _run_beir(args, settings)


def _settings(args: argparse.Namespace) -> Any:
    from rag.core.config import Settings, load_settings, with_overrides

    settings = load_settings(args.config) if args.config else Settings()
    overrides = {
        "generator.kind": args.generator,
        "generator.model": args.model,
        "generator.base_url": args.base_url,
        "answer.template": args.template,
        "answer.rerank": False if args.no_rerank else (True if args.reranker else None),
        "retrieval.reranker": args.reranker,
        "answer.rerank_prior_scale": args.rerank_prior_scale,
        "answer.log_file": None,
    }
    return with_overrides(settings, {k: v for k, v in overrides.items() if v is not None})


def _run_beir(args: argparse.Namespace, settings: Any) -> int:
    from rag.answering.engine import Engine
    from rag.core.errors import ConfigError
    from rag.datasets.beir import load_corpus_texts, load_qrels, load_queries, load_query_types, resolve_beir
    from rag.evaluation.answers import build_cases, evaluate_answers, summarize

    corpus, queries_path, qrels_path = resolve_beir([args.corpus], None, None, args.split)
    cases = build_cases(
        load_queries(queries_path),
        load_qrels(qrels_path),
        load_corpus_texts(corpus[0]),
        qtypes=load_query_types(queries_path),
        qtype=args.qtype,
        limit=args.limit,
        offset=args.offset,
    )
    if not cases:
        raise ConfigError(f"{queries_path}: no judged question{f' of type {args.qtype!r}' if args.qtype else ''}")
    engine = Engine.load(index_for(corpus, args.index, settings), settings=settings)
    engine.ask(cases[0].question)  # warm-up: model loads are not answer latency
    records = evaluate_answers(cases, engine.ask, progress=args.progress)
    report = summarize(records)
    write_records(args.records, [r.to_json() for r in records])
    if args.json:
        head = {"corpus": str(args.corpus), "qtype": args.qtype}
        print(json.dumps(described(engine, settings, head, report.to_json()), indent=2))
        return 0
    print(
        f"{report.questions} questions{f' ({args.qtype})' if args.qtype else ''}, generator {engine.generator_name}, "
        f"template {engine.template.label}, {'reranked' if settings.answer.rerank else 'not reranked'}\n"
        f"cited precision {report.cited_precision:.3f}  hit rate {report.hit_rate:.3f}  "
        f"content-word F1 {report.content_f1:.3f}\n"
        f"identical questions pooled: cited precision {report.cited_precision_pooled:.3f}  "
        f"hit rate {report.hit_rate_pooled:.3f}\n"
        f"abstained {report.abstention_rate:.3f}  fallback {report.fallback_rate:.3f}  errors {report.errors}  "
        f"seconds p50 {report.seconds_p50:.2f} p95 {report.seconds_p95:.2f}"
    )
    warn_errors(report.errors)
    return 0


def _run_questions(args: argparse.Namespace, settings: Any) -> int:
    from rag.datasets.guideline_questions import read_guideline_questions
    from rag.evaluation.guideline_answers import evaluate_guideline_answers, summarize_guideline_answers

    questions = window(read_guideline_questions(args.questions), args, args.questions, "question")
    engine, index = warm_engine(args, settings, questions[0].text)

    def search(question: str, rerank: bool) -> Any:
        return engine.searcher.search(question, k=10, rerank=rerank)

    records = evaluate_guideline_answers(questions, search, engine.ask, progress=args.progress)
    report = summarize_guideline_answers(records)
    write_records(args.records, [r.to_json() for r in records])
    head = {"questions_file": str(args.questions), "index": str(index)}
    summary = described(engine, settings, head, report.to_json())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{report.questions} questions from {args.questions}, generator {engine.generator_name}, template "
            f"{engine.template.label}, answers {'reranked' if settings.answer.rerank else 'not reranked'}\n"
            f"document recall@10 {report.doc_recall_at_10:.3f} (reranked {report.doc_recall_at_10_reranked:.3f})  "
            f"evidence recall@10 {report.evidence_recall_at_10:.3f} "
            f"(reranked {report.evidence_recall_at_10_reranked:.3f})\n"
            f"hit {report.hit_rate:.3f}  cited precision {report.cited_precision:.3f}  answer-term recall "
            f"{report.answer_term_recall:.3f}  all terms {report.all_terms_rate:.3f}\n"
            f"abstained {report.abstention_rate:.3f}  fallback {report.fallback_rate:.3f}  "
            f"on the fused order {report.fused_order_rate:.3f}  errors {report.errors}  "
            f"seconds p50 {report.seconds_p50:.2f} p95 {report.seconds_p95:.2f}"
        )
    warn_errors(report.errors)
    return 0
