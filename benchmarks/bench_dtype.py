"""float32 vs bfloat16 weights for the local generator: closed-form PubMedQA on held-out items, and speed.

Scores the validation items recorded in the adapter's training card (never trained on) in the gold-context
setting with the same adapter loaded in float32 and in bfloat16, then reports accuracy, macro-F1, how often the
two choose the same label, the largest log-likelihood difference, and seconds per item. A second part times a
greedy 64-token reply on RAG-sized prompts (prefill and decode).

    python benchmarks/bench_dtype.py [--adapter DIR] [--items 150] [--threads 2] [--json OUT]

CPU figures move with whatever else runs on the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CLINRAG_SHARED_DATA", ROOT.parent / "shared" / "data"))

from rag.answering.closed_form import load_pubmedqa  # noqa: E402
from rag.answering.prompts import load_template  # noqa: E402
from rag.core.config import PACKAGED_ADAPTER, GeneratorSettings  # noqa: E402
from rag.models.card import read_card  # noqa: E402
from rag.models.generators.local import load_local_generator  # noqa: E402
from rag.training.finetune.data import Budgets  # noqa: E402
from rag.training.finetune.evaluate import closed_form_eval, pubmedqa_item_prompt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, default=PACKAGED_ADAPTER, help="adapter with a training card")
    parser.add_argument("--items", type=int, default=150, help="validation items scored (default 150)")
    parser.add_argument("--replies", type=int, default=6, help="greedy replies timed per dtype (default 6)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    card = read_card(args.adapter)
    validation = set(card["data"]["split"]["validation"])
    items = [i for i in load_pubmedqa(DATA / "pubmedqa" / "pqal_dev.json") if i.pmid in validation][: args.items]
    budgets = Budgets(**card["budgets"])
    template = load_template("pubmedqa")
    load_before = os.getloadavg()
    figures: dict[str, Any] = {"items": len(items), "adapter": str(args.adapter), "threads": args.threads}
    results = {}
    for dtype in ("float32", "bfloat16"):
        gen = load_local_generator(GeneratorSettings(adapter=str(args.adapter), dtype=dtype, threads=args.threads))
        started = time.perf_counter()
        result = closed_form_eval(gen, items, "gold", template, budgets, progress=True)
        per_item = (time.perf_counter() - started) / len(items)
        prompts = [pubmedqa_item_prompt(i, "gold", template, gen.count_tokens, budgets) for i in items[: args.replies]]
        prefill, decode = [], []
        for prompt in prompts:
            t0 = time.perf_counter()
            gen.generate(prompt.messages, max_new_tokens=1)
            t1 = time.perf_counter()
            reply = gen.generate(prompt.messages, max_new_tokens=64)
            t2 = time.perf_counter()
            prefill.append(t1 - t0)
            decode.append(max(reply.new_tokens - 1, 1) / max(t2 - t1 - (t1 - t0), 1e-6))
        results[dtype] = result
        figures[dtype] = {
            "accuracy": round(result.accuracy, 4),
            "macro_f1": round(result.macro_f1, 4),
            "predicted": result.predicted,
            "s_per_item": round(per_item, 3),
            "prefill_s_mean": round(sum(prefill) / len(prefill), 3),
            "decode_tokens_per_s": round(sum(decode) / len(decode), 2),
        }
    a, b = results["float32"].loglik, results["bfloat16"].loglik
    pairs = list(zip(a, b, strict=True))
    same = sum(max(range(3), key=x.__getitem__) == max(range(3), key=y.__getitem__) for x, y in pairs)
    figures["same_label_share"] = round(same / len(items), 4)
    figures["max_abs_loglik_diff"] = round(max(abs(p - q) for x, y in pairs for p, q in zip(x, y, strict=True)), 4)
    figures["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
