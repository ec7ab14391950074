"""Check-stage latency: three cited suggestions judged against their passages, per checker, on the demo corpus.

    python benchmarks/bench_check.py [--index indexes/demo] [--threads 2] [--repeat 3] [--json out.json]

For each of the 20 demo questions of bench_ask.py: retrieve and render the prompt as `ask` does, take the first
three suggestions of the extractive answer (each cites one passage; the third also cites a second one, as model
replies often do), and time `Engine._check` (verdicts, flags, references) with the trained cross-encoder and with
the calibrated checker. Prints p50/p95 milliseconds, pairs judged, and the model-only share of the time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    from bench_ask import QUESTIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "demo")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per question (the median is kept)")
    parser.add_argument("--model", default="default", help="trained verifier folder (default: the packaged one)")
    parser.add_argument(
        "--no-quote-rule",
        action="store_true",
        help="judge verbatim quotes with the model too (the extractive suggestions are quotes: this times the model)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from rag.answering.citations import ParsedReply, ParsedSuggestion, parse_reply
    from rag.answering.engine import Engine
    from rag.checking.support import SupportChecker
    from rag.checking.verifier import NLIVerifier
    from rag.core.config import Settings, with_overrides

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.index / "manifest.json").is_file():
        from indexer import build_index

        build_index([ROOT / "corpora" / "guidelines"], args.index, Settings().index)
    settings = with_overrides(Settings(), {"generator.kind": "extractive"})
    verifier = NLIVerifier.load(args.model)
    verifier.quote_rule = not args.no_quote_rule
    engine = Engine.load(args.index, settings=settings, checker=verifier)
    checkers: dict[str, Any] = {"cross-encoder": engine.checker, "calibrated": SupportChecker(engine.searcher_embedder)}
    cases = []
    for question in QUESTIONS:
        evidence = engine.searcher.search(question, k=settings.answer.evidence_k)
        prompt = engine._render(question, evidence, None)
        parsed = parse_reply(engine.extractive.answer(question, prompt.evidence)).suggestions[:3]
        if len(parsed) < 3 or len(prompt.evidence) < 2:
            continue
        second = next(item.key for item in prompt.evidence if item.key not in parsed[2].citations)
        parsed = [*parsed[:2], ParsedSuggestion(parsed[2].text, (*parsed[2].citations, second))]
        cases.append((question, prompt, ParsedReply(tuple(parsed), False, True, False)))
    results: dict[str, Any] = {"questions": len(cases), "threads": torch.get_num_threads(),
                               "quote_rule": verifier.quote_rule}  # fmt: skip
    for name, checker in checkers.items():
        engine.checker = checker
        engine._check(cases[0][0], cases[0][1], cases[0][2], "", None, None, {})  # warm-up
        totals, model_times, pairs = [], [], []
        for question, prompt, parsed in cases:
            by_key = {item.key: item.text for item in prompt.evidence}
            judged = [(s.text, by_key[k]) for s in parsed.suggestions for k in s.citations]
            runs, model_runs = [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                engine._check(question, prompt, parsed, "", None, None, {})
                runs.append(time.perf_counter() - start)
                start = time.perf_counter()
                checker.judge(judged)
                model_runs.append(time.perf_counter() - start)
            totals.append(float(np.median(runs)) * 1000)
            model_times.append(float(np.median(model_runs)) * 1000)
            pairs.append(len(judged))
        results[name] = {
            "check_ms_p50": round(float(np.percentile(totals, 50)), 1),
            "check_ms_p95": round(float(np.percentile(totals, 95)), 1),
            "judge_ms_p50": round(float(np.percentile(model_times, 50)), 1),
            "pairs_per_answer": round(float(np.mean(pairs)), 2),
        }
        r = results[name]
        print(
            f"{name:>14}: check p50 {r['check_ms_p50']:.1f} ms, p95 {r['check_ms_p95']:.1f} ms "
            f"(judging alone p50 {r['judge_ms_p50']:.1f} ms; {r['pairs_per_answer']} pairs per answer, "
            f"{len(cases)} answers of 3 suggestions, {results['threads']} threads)"
        )
    # The old check stage also held the extractive fallback (a second answer: evidence sentences embedded, then
    # checked); it is timed apart now. Its first half alone:
    fallback = []
    for question, prompt, _ in cases:
        start = time.perf_counter()
        engine.extractive.answer(question, prompt.evidence)
        fallback.append((time.perf_counter() - start) * 1000)
    results["extractive_answer_ms_p50"] = round(float(np.percentile(fallback, 50)), 1)
    print(f"extractive answer (the fallback's first half): p50 {results['extractive_answer_ms_p50']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
