"""`Engine.ask` latency and generation speed over 20 questions on the demo guideline corpus.

    python benchmarks/bench_ask.py [--index indexes/demo] [--generator auto|local|llamacpp|openai|extractive]
        [--model M] [--base-url URL] [--no-rerank] [--int8]
        [--max-new-tokens 128] [--adapter DIR|none] [--dtype bfloat16] [--merged-weights f16|bf16]
        [--evidence-k K] [--max-prompt-tokens N]
        [--json out.json]

Builds the demo index if it is missing. Prints per-question timings, ask latency p50/p95, new tokens/s,
how many answers abstained, used the extractive fallback, or had citations dropped.
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

QUESTIONS = [
    "What is the first-line treatment for uncomplicated cystitis in a non-pregnant woman?",
    "Which anticoagulant should be used for atrial fibrillation in a patient with a mechanical heart valve?",
    "How should stable COPD with frequent exacerbations be treated?",
    "What is the recommended initial treatment for community-acquired pneumonia in an adult outpatient?",
    "Which drugs reduce mortality in heart failure with reduced ejection fraction?",
    "What regimen eradicates Helicobacter pylori infection?",
    "What blood pressure target and first drugs are recommended for adults with hypertension?",
    "What is the first-line treatment for moderate major depressive disorder in adults?",
    "How should an acute migraine attack be treated?",
    "Who should receive statin therapy for primary prevention of cardiovascular disease?",
    "What is the standard treatment regimen for drug-susceptible pulmonary tuberculosis?",
    "What is the first-line glucose-lowering drug in type 2 diabetes?",
    "How long should anticoagulation continue after a provoked deep vein thrombosis?",
    "What is the preferred reliever for adults with mild asthma?",
    "When should an SGLT2 inhibitor be added in type 2 diabetes?",
    "How is a pulmonary embolism treated in a patient with cancer?",
    "What should be done if a patient with asthma remains uncontrolled on low-dose inhaled corticosteroid?",
    "Which antibiotics are alternatives for cystitis when nitrofurantoin cannot be used?",
    "How should blood pressure be treated in a Black adult with hypertension?",
    "What preventive treatment is recommended for frequent migraine?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "demo")
    parser.add_argument("--generator", choices=["auto", "local", "llamacpp", "openai", "extractive"], default="auto")
    parser.add_argument("--model", help="generator model (e.g. qwen-coder-1.5b with llamacpp)")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint (--generator openai)")
    parser.add_argument("--no-rerank", action="store_true", help="answer from the fused order")
    parser.add_argument("--adapter")
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"])
    parser.add_argument("--merged-weights", choices=["f16", "bf16"], help="llama.cpp: the merged copy's type")
    parser.add_argument("--draft-tokens", type=int, help="llama.cpp: tokens guessed from the prompt (0: off)")
    parser.add_argument("--template", help="answer template in prompts/templates.toml (default: the engine's)")
    parser.add_argument("--evidence-k", type=int, help="passages retrieved (default: the engine's)")
    parser.add_argument("--max-prompt-tokens", type=int, help="prompt budget (default: the engine's)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, default=len(QUESTIONS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from indexer import build_index
    from rag.answering.engine import Engine
    from rag.core.config import IndexSettings, Settings, with_overrides

    if not (args.index / "manifest.json").is_file():
        build_index([ROOT / "corpora" / "guidelines"], args.index, IndexSettings())
    overrides: dict[str, Any] = {
        "generator.kind": args.generator,
        "generator.model": args.model,
        "generator.base_url": args.base_url,
        "answer.rerank": False if args.no_rerank else None,
        "generator.quantize_int8": args.int8 or None,
        "generator.max_new_tokens": args.max_new_tokens,
        "generator.adapter": args.adapter,
        "generator.threads": args.threads,
        "generator.dtype": args.dtype,
        "generator.merged_weights": args.merged_weights,
        "generator.draft_tokens": args.draft_tokens,
        "answer.evidence_k": args.evidence_k,
        "answer.template": args.template,
        "answer.max_prompt_tokens": args.max_prompt_tokens,
    }
    settings = with_overrides(Settings(), {k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()
    engine = Engine.load(args.index, settings=settings)
    engine.ask("warm-up: treatment of asthma")  # loads the embedder and the model outside the timings
    load_s = time.perf_counter() - started

    rows = []
    for question in QUESTIONS[: args.limit]:
        t0 = time.perf_counter()
        answer = engine.ask(question)
        total = time.perf_counter() - t0
        generate = answer.timings.get("generate", 0.0)
        rows.append({
            "question": question,
            "seconds": round(total, 3),
            "generate_s": round(generate, 3),
            "prompt_tokens": answer.prompt_tokens,
            "new_tokens": answer.new_tokens,
            "suggestions": len(answer.suggestions),
            "abstained": answer.abstained,
            "fallback": answer.fallback is not None,
            "dropped_citations": len(answer.dropped_citations),
            "removed": len(answer.removed_suggestions),
            "reply": answer.raw_output,
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    seconds = np.array([r["seconds"] for r in rows])
    new_tokens = sum(r["new_tokens"] for r in rows)
    gen_seconds = sum(r["generate_s"] for r in rows)
    summary = {
        "generator": engine.generator_name,
        "questions": len(rows),
        "load_s": round(load_s, 1),
        "ask_p50_s": round(float(np.percentile(seconds, 50)), 2),
        "ask_p95_s": round(float(np.percentile(seconds, 95)), 2),
        "new_tokens_per_s": round(new_tokens / gen_seconds, 1) if gen_seconds and new_tokens else None,
        "mean_new_tokens": round(new_tokens / len(rows), 1),
        "mean_prompt_tokens": round(sum(r["prompt_tokens"] for r in rows) / len(rows)),
        "abstained": sum(r["abstained"] for r in rows),
        "fallback": sum(r["fallback"] for r in rows),
        "with_dropped_citations": sum(r["dropped_citations"] > 0 for r in rows),
        "suggestions_removed": sum(r["removed"] for r in rows),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
