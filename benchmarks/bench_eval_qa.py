"""QA harness benchmark: PubMedQA dev x {0, 3 shots} x {gold abstract, hybrid retrieval}, closed-form scoring.

Runs `benchmarks/grids/pubmedqa_shots_retrieval.yaml` with the fine-tuned generator (`--adapter DIR`; without
one, the newest adapter under rag/data/adapters/, else the base model, said so in the output) on 200 PubMedQA
dev items. With an adapter whose training card records its split, the items are ones it was never trained on
(validation and calibration PMIDs); the few-shot pool is the rest of the file, never an evaluated item.
Reports the summary table, wall time, items/s per configuration and a 500-item projection.

    python benchmarks/bench_eval_qa.py [--adapter DIR] [--items 200] [--label-bias none|card] [--fresh]

CPU figures move with whatever else runs on the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CLINRAG_SHARED_DATA", ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rag.datasets.qa import read_dataset  # noqa: E402
from rag.evaluation.qa.grid import Grid, load_grid  # noqa: E402
from rag.evaluation.qa.runner import RunResult, run_grid  # noqa: E402

GRID = ROOT / "benchmarks" / "grids" / "pubmedqa_shots_retrieval.yaml"
ADAPTERS = ROOT / "rag" / "data" / "adapters"
DEFAULT_INDEX = Path("/root/clinrag-bench/index-pubmedqa")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, metavar="DIR", help="LoRA adapter of the fine-tuned generator")
    parser.add_argument("--items", type=int, default=200, help="PubMedQA dev items (default 200)")
    parser.add_argument("--grid", type=Path, default=GRID, help="grid file (default the issue's benchmark grid)")
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="index of the PubMedQA corpus")
    parser.add_argument(
        "--label-bias",
        choices=["none", "card"],
        default="none",
        help="add the training card's fitted label biases (fitted on the calibration PMIDs, which are evaluated too)",
    )
    parser.add_argument("--threads", type=int, help="torch threads of the generator (default: torch's own)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="generator weights (default: the grid's)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_qa_run")
    parser.add_argument("--fresh", action="store_true", help="delete --out first (timings of a resumed run lie)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_eval_qa.json")
    args = parser.parse_args()

    os.chdir(ROOT)  # the grid's relative paths are read from the project root
    adapter = args.adapter or newest_adapter()
    grid = with_generator(load_grid(args.grid), adapter, args.label_bias, args.threads, args.dtype)
    dataset = DATA / "pubmedqa" / "pqal_dev.json"
    ids, selection = evaluation_ids(dataset, adapter, args.items)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    load_before = os.getloadavg()
    result = run_grid(dataset, "pubmedqa", args.out, grid=grid, index=args.index, item_ids=ids, progress=True)
    report = describe(result, adapter, selection, load_before, os.getloadavg(), args.label_bias)
    print(report["text"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report["json"], indent=2) + "\n", encoding="utf-8")
    args.json.with_suffix(".txt").write_text(report["text"] + "\n", encoding="utf-8")
    return 0


def newest_adapter() -> Path | None:
    found = sorted(ADAPTERS.glob("*/adapter_config.json"), key=lambda p: p.stat().st_mtime) if ADAPTERS.is_dir() else []
    return found[-1].parent if found else None


def with_generator(
    grid: Grid, adapter: Path | None, label_bias: str, threads: int | None, dtype: str | None = None
) -> Grid:
    spec = grid.generators[0]
    update: dict[str, Any] = (
        {"name": "finetuned", "adapter": str(adapter), "label_bias": label_bias}
        if adapter
        else {"name": "base", "adapter": None, "label_bias": "none"}
    )
    update["threads"] = threads  # how fast, not what it answers: finished items still resume
    if dtype:
        update["dtype"] = dtype
    return grid.model_copy(update={"generators": [spec.model_copy(update=update)]})


def evaluation_ids(dataset: Path, adapter: Path | None, count: int) -> tuple[list[str], str]:
    """Items the adapter never trained on when its card records the split; else the first `count` items."""
    items = [i.item_id for i in read_dataset(dataset, "pubmedqa").items]
    card = adapter / "training_card.json" if adapter else None
    if card is not None and card.is_file():
        split = json.loads(card.read_text(encoding="utf-8")).get("data", {}).get("split", {})
        trained = set(split.get("train", []))
        if trained:
            held_out = [i for i in items if i not in trained]
            return held_out[:count], (
                f"{min(count, len(held_out))} of the {len(held_out)} items held out of the adapter's training "
                f"(validation {len(split.get('validation', []))} + calibration {len(split.get('calibration', []))})"
            )
    return items[:count], f"the first {count} items of the file"


def per_config(result: RunResult) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (result.out / "predictions.jsonl").read_text().splitlines()]
    out = []
    for summary in result.summaries:
        mine = [r for r in rows if r["config_id"] == summary.config.config_id and r["status"] == "ok"]
        seconds = sum(r["latency_s"] for r in mine)
        out.append(
            {
                "config": summary.config.label,
                "id": summary.config.config_id,
                "items": len(mine),
                "seconds": round(seconds, 1),
                "items_per_s": round(len(mine) / seconds, 3) if seconds else None,
                "mean_prompt_tokens": round(summary.prompt_tokens, 1),
                "accuracy": summary.accuracy.to_json() if summary.accuracy else None,
                "macro_f1": summary.macro_f1.to_json() if summary.macro_f1 else None,
                "retrieval": summary.retrieval,
            }
        )
    return out


def describe(
    result: RunResult,
    adapter: Path | None,
    selection: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    label_bias: str,
) -> dict[str, Any]:
    configs = per_config(result)
    zero_gold = next((c for c in configs if c["config"].split(" | ")[1:3] == ["0-shot", "gold"]), configs[0])
    per_item = zero_gold["seconds"] / zero_gold["items"] if zero_gold["items"] else float("nan")
    projection_min = 500 * per_item / 60
    generator = f"fine-tuned adapter {adapter}" if adapter else "BASE model (no adapter found under rag/data/adapters)"
    lines = [
        f"generator: {generator}; label bias: {label_bias}",
        f"items: {selection}",
        (result.out / "summary.md").read_text(encoding="utf-8").split("\n### Confusion")[0].rstrip(),
        "",
        f"{'configuration':<62} {'items':>5} {'seconds':>8} {'items/s':>8} {'prompt tok':>10}",
    ]
    for c in configs:
        lines.append(
            f"{c['config'][:62]:<62} {c['items']:>5} {c['seconds']:>8.1f} {c['items_per_s'] or 0:>8.3f} "
            f"{c['mean_prompt_tokens']:>10.1f}"
        )
    lines += [
        "",
        f"wall time {result.seconds:.1f} s (loop {result.loop_seconds:.1f} s, models loaded included); "
        f"{result.evaluated} item evaluations, {result.items_per_second:.3f} items/s overall; "
        f"{result.resumed} resumed, {result.failed} failed",
        f"500-item closed-form projection ({zero_gold['config']}): {per_item:.2f} s/item -> {projection_min:.1f} min",
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {os.cpu_count()} CPUs; "
        f"{platform.python_version()}",
    ]
    data = {
        "generator": generator,
        "label_bias": label_bias,
        "selection": selection,
        "configs": configs,
        "wall_s": round(result.seconds, 2),
        "loop_s": round(result.loop_seconds, 2),
        "evaluated": result.evaluated,
        "items_per_s": round(result.items_per_second, 4),
        "projection_500_items_min": round(projection_min, 2),
        "load_average": {"before": load_before, "after": load_after},
        "run_dir": str(result.out),
    }
    return {"text": "\n".join(lines), "json": data}


if __name__ == "__main__":
    sys.exit(main())
