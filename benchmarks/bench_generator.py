"""Generator benchmark: the default local model (packaged SmolLM2-135M-Instruct) on RAG-shaped prompts.

Measures the one-off GGUF -> Hugging Face conversion (into a temporary cache, so it really runs), the load time
of the converted folder, then for fp32 / dynamic int8 and 1 / 2 threads: prefill time (a 1-token reply),
latency p50/p95 of a `--max-new-tokens` greedy reply, new tokens/s end to end and in the decode phase, and how
often the int8 reply is word-for-word the fp32 one. Each prompt is a system rule block, five evidence passages
of ~100 tokens (PubMedQA dev abstracts: the question's own abstract first, then others as distractors) and the
question.

    python benchmarks/bench_generator.py [--prompts 10] [--max-new-tokens 128] [--json OUT]

CPU figures move with whatever else runs on the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CLINRAG_SHARED_DATA", ROOT.parent / "shared" / "data"))

from rag.core.config import GeneratorSettings  # noqa: E402
from rag.models.generators import ChatMessage, LocalGenerator  # noqa: E402
from rag.models.generators.convert import ensure_converted, packaged_gguf  # noqa: E402
from rag.models.generators.local import load_local_generator  # noqa: E402

SYSTEM = (
    "You are a clinical evidence assistant. Answer the question using only the numbered evidence passages. "
    "Cite every claim with the passage number in square brackets, e.g. [2]. If the passages do not answer the "
    "question, say that the evidence is insufficient. Do not give advice that the evidence does not support."
)
PASSAGES = 5
PASSAGE_TOKENS = 100


@dataclass(frozen=True)
class Row:
    config: str
    quantize_int8: bool
    threads: int
    prompts: int
    prompt_tokens_mean: float
    prefill_p50_s: float
    latency_p50_s: float
    latency_p95_s: float
    new_tokens_mean: float
    hit_length_share: float
    tokens_per_s: float
    decode_tokens_per_s: float
    same_text_as_fp32: float | None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def passages_of(item: dict[str, Any], gen: LocalGenerator) -> list[str]:
    """An abstract cut into chunks of ~PASSAGE_TOKENS tokens, as the indexer's chunker would."""
    words = " ".join(item["CONTEXTS"]).split()
    chunks, start = [], 0
    while start < len(words):
        end = start + 1
        while end < len(words) and gen.count_tokens(" ".join(words[start : end + 1])) <= PASSAGE_TOKENS:
            end += 1
        chunks.append(" ".join(words[start:end]))
        start = end
    return chunks


def build_prompts(count: int, gen: LocalGenerator) -> list[list[ChatMessage]]:
    path = DATA / "pubmedqa" / "pqal_dev.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmark reads PubMedQA dev from ../shared/data beside the project")
    items = list(json.loads(path.read_text(encoding="utf-8")).values())
    prompts = []
    for i in range(count):
        pool = passages_of(items[i], gen)[:2]
        j = i + 1
        while len(pool) < PASSAGES:  # distractors: the first chunk of the following abstracts
            pool.append(passages_of(items[j % len(items)], gen)[0])
            j += 1
        evidence = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(pool, 1))
        user = f"Evidence:\n{evidence}\n\nQuestion: {items[i]['QUESTION']}\nAnswer with citations:"
        prompts.append([ChatMessage("system", SYSTEM), ChatMessage("user", user)])
    return prompts


def measure(gen: LocalGenerator, prompts: list[list[ChatMessage]], max_new: int) -> tuple[list[Any], list[float]]:
    gen.generate(prompts[0], max_new_tokens=4)  # warm-up: first-call allocations are not what users wait for
    prefill = [gen.generate(p, max_new_tokens=1).seconds for p in prompts]
    replies = []
    for n, prompt in enumerate(prompts, 1):
        replies.append(gen.generate(prompt, max_new_tokens=max_new))
        print(f"  {n}/{len(prompts)}: {replies[-1].new_tokens} tokens in {replies[-1].seconds:.1f} s", flush=True)
    return replies, prefill


def summarise(
    config: str,
    settings: GeneratorSettings,
    replies: list[Any],
    prefill: list[float],
    max_new: int,
    reference: list[str] | None,
) -> Row:
    seconds = [r.seconds for r in replies]
    new = [r.new_tokens for r in replies]
    decode_time = sum(max(s - p, 1e-9) for s, p in zip(seconds, prefill, strict=True))
    same = None if reference is None else sum(r.text == t for r, t in zip(replies, reference, strict=True))
    return Row(
        config=config,
        quantize_int8=settings.quantize_int8,
        threads=settings.threads or 0,
        prompts=len(replies),
        prompt_tokens_mean=round(statistics.mean(r.prompt_tokens for r in replies), 1),
        prefill_p50_s=round(statistics.median(prefill), 3),
        latency_p50_s=round(percentile(seconds, 0.5), 2),
        latency_p95_s=round(percentile(seconds, 0.95), 2),
        new_tokens_mean=round(statistics.mean(new), 1),
        hit_length_share=round(sum(r.finish_reason == "length" for r in replies) / len(replies), 2),
        tokens_per_s=round(sum(new) / sum(seconds), 2),
        decode_tokens_per_s=round(sum(max(n - 1, 0) for n in new) / decode_time, 2),
        same_text_as_fp32=None if same is None else round(same / len(replies), 2),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--configs", default="fp32-t1,fp32-t2,int8-t1,int8-t2", help="comma list of {fp32,int8}-t{N}")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    figures: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    started = time.perf_counter()
    import torch
    import transformers

    figures.update(torch=torch.__version__, transformers=transformers.__version__)
    figures["import_s"] = round(time.perf_counter() - started, 2)
    packaged = packaged_gguf(GeneratorSettings().model)
    assert packaged is not None
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        cache = Path(tmp)
        mark = time.perf_counter()
        ensure_converted(packaged, cache)
        figures["conversion_s"] = round(time.perf_counter() - mark, 2)
        mark = time.perf_counter()
        base = load_local_generator(GeneratorSettings(), cache_dir=cache)
        figures["load_s"] = round(time.perf_counter() - mark, 2)
        prompts = build_prompts(args.prompts, base)
        del base
        rows, fp32_text = [], {}
        for config in args.configs.split(","):
            kind, threads = config.split("-t")
            settings = GeneratorSettings(threads=int(threads), quantize_int8=kind == "int8")
            mark = time.perf_counter()
            gen = load_local_generator(settings, cache_dir=cache)
            print(f"{config}: loaded in {time.perf_counter() - mark:.2f} s, load average {os.getloadavg()[0]:.2f}")
            replies, prefill = measure(gen, prompts, args.max_new_tokens)
            if kind == "fp32":
                fp32_text[threads] = [r.text for r in replies]
            reference = fp32_text.get(threads) if kind == "int8" else None
            rows.append(summarise(config, settings, replies, prefill, args.max_new_tokens, reference))
    figures["load_average_end"] = round(os.getloadavg()[0], 2)
    figures["max_new_tokens"] = args.max_new_tokens
    print_table(figures, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"figures": figures, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


def print_table(figures: dict[str, Any], rows: list[Row]) -> None:
    print()
    for key, value in figures.items():
        print(f"{key:<18} {value}")
    header = [
        "config",
        "prompt tok",
        "prefill p50",
        "p50 s",
        "p95 s",
        "new tok",
        "at limit",
        "tok/s",
        "decode tok/s",
        "= fp32",
    ]
    print("\n" + " | ".join(header))
    for r in rows:
        same = "-" if r.same_text_as_fp32 is None else f"{r.same_text_as_fp32:.0%}"
        cells = [
            r.config,
            r.prompt_tokens_mean,
            r.prefill_p50_s,
            r.latency_p50_s,
            r.latency_p95_s,
            r.new_tokens_mean,
            f"{r.hit_length_share:.0%}",
            r.tokens_per_s,
            r.decode_tokens_per_s,
            same,
        ]
        print(" | ".join(str(c) for c in cells))


if __name__ == "__main__":
    raise SystemExit(main())
