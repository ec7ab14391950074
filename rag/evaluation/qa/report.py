"""summary.csv, summary.md (one row per configuration, the best marked), metrics.json and PNG plots.

Plots need matplotlib (the optional extra `plot`); without it they are skipped with a one-line notice.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rag.evaluation.qa.grid import Skipped
from rag.evaluation.qa.scoring import Interval
from rag.evaluation.qa.summary import ConfigSummary

CSV_COLUMNS = (
    "best", "config_id", "template", "shots", "selector", "context", "generator", "scoring", "items", "scored",
    "failed", "unparsed", "accuracy", "accuracy_low", "accuracy_high", "macro_f1", "macro_f1_low", "macro_f1_high",
    "retrieval_recall", "retrieval_mrr", "retrieval_ndcg", "citation_recall", "citation_precision",
    "comprehensiveness", "comprehensiveness_low", "comprehensiveness_high", "hallucination", "hallucination_low",
    "hallucination_high", "latency_p50_s", "latency_p95_s", "prompt_tokens", "new_tokens",
)  # fmt: skip


def majority_baseline(summaries: Sequence[ConfigSummary]) -> tuple[str, float] | None:
    """The most frequent gold label and the accuracy of always answering it (the bar a model must clear)."""
    matrix = next((s.confusion for s in summaries if s.confusion), None)
    if not matrix:
        return None
    totals = {gold: sum(row.values()) for gold, row in matrix.items()}
    label = max(totals, key=lambda g: totals[g])
    return (label, totals[label] / sum(totals.values())) if sum(totals.values()) else None


def best_index(summaries: Sequence[ConfigSummary]) -> int | None:
    """The row with the highest primary metric; ties go to macro-F1, then to fewer failures, then to the first."""
    ranked = [
        (s.primary.value, s.macro_f1.value if s.macro_f1 else 0.0, -s.failed, -n, n)
        for n, s in enumerate(summaries)
        if s.primary is not None and not math.isnan(s.primary.value)
    ]
    return max(ranked)[-1] if ranked else None


def write_reports(
    run_dir: Path,
    summaries: Sequence[ConfigSummary],
    skipped: Sequence[Skipped],
    dataset: Mapping[str, Any],
    *,
    plots: bool = True,
) -> tuple[Path, ...]:
    best = best_index(summaries)
    files = [
        _write(run_dir / "summary.csv", summary_csv(summaries, best)),
        _write(run_dir / "summary.md", summary_markdown(summaries, best, skipped, dataset)),
        _write(run_dir / "metrics.json", json.dumps([s.to_json() for s in summaries], indent=2) + "\n"),
    ]
    if plots:
        files += write_plots(run_dir, summaries, dataset_name=", ".join(dataset.get("subsets") or ["all"]))
    return tuple(files)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- tables


def csv_row(summary: ConfigSummary, best: bool) -> dict[str, Any]:
    c = summary.config
    retrieval = {name.split("@")[0]: value for name, value in summary.retrieval.items()}
    row: dict[str, Any] = {
        "best": int(best), "config_id": c.config_id, "template": c.template, "shots": c.shots,
        "selector": c.selector, "context": c.context_label, "generator": c.generator.name, "scoring": c.scoring,
        "items": summary.total, "scored": summary.scored, "failed": summary.failed, "unparsed": summary.unparsed,
        "retrieval_recall": retrieval.get("recall"), "retrieval_mrr": retrieval.get("mrr"),
        "retrieval_ndcg": retrieval.get("ndcg"), "citation_recall": summary.citation_recall,
        "citation_precision": summary.citation_precision, "latency_p50_s": summary.latency_p50_s,
        "latency_p95_s": summary.latency_p95_s, "prompt_tokens": summary.prompt_tokens,
        "new_tokens": summary.new_tokens,
    }  # fmt: skip
    for name in ("accuracy", "macro_f1", "comprehensiveness", "hallucination"):
        interval: Interval | None = getattr(summary, name)
        row[name], row[f"{name}_low"], row[f"{name}_high"] = (
            (interval.value, interval.low, interval.high) if interval else (None, None, None)
        )
    return {k: _number(v) for k, v in row.items()}


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    return "" if value is None else value


def summary_csv(summaries: Sequence[ConfigSummary], best: int | None) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for n, summary in enumerate(summaries):
        writer.writerow(csv_row(summary, n == best))
    return buffer.getvalue()


def _ci(interval: Interval | None) -> str:
    if interval is None or math.isnan(interval.value):
        return "–"
    return f"{interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def summary_markdown(
    summaries: Sequence[ConfigSummary], best: int | None, skipped: Sequence[Skipped], dataset: Mapping[str, Any]
) -> str:
    closed = any(s.accuracy is not None for s in summaries)
    metric = "accuracy" if closed else "comprehensiveness"
    lines = [
        f"# QA evaluation: {dataset.get('format')} ({Path(str(dataset.get('path'))).name}, "
        f"{dataset.get('items_evaluated')} items)",
        "",
    ]
    if best is not None:
        top = summaries[best]
        lines += [f"Best by {metric}: **{top.config.label}**: {_ci(top.primary)} (95% bootstrap CI)", ""]
    majority = majority_baseline(summaries)
    if majority is not None:
        lines += [f"Majority class: always '{majority[0]}' scores accuracy {majority[1]:.3f}.", ""]
    head = ["", "id", "template", "shots", "context", "generator", "scoring", "n", "failed"]
    head += ["accuracy [95% CI]", "macro-F1 [95% CI]", "unparsed"] if closed else []
    head += ["comprehensiveness", "hallucination"] if not closed else []
    head += ["retrieval R/MRR", "citation R/P", "p50 / p95 s", "tokens in / out"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, s in enumerate(summaries):
        lines.append("| " + " | ".join(_md_row(s, n == best, closed)) + " |")
    lines += _notes(summaries, skipped, dataset)
    lines += _confusions(summaries)
    return "\n".join(lines) + "\n"


def _md_row(s: ConfigSummary, best: bool, closed: bool) -> list[str]:
    c = s.config
    shots = f"{c.shots} {c.selector}" if c.shots else "0"
    cells = ["★" if best else "", c.config_id, c.template, shots, c.context_label, c.generator.name, c.scoring]
    cells += [f"{s.scored}/{s.total}", str(s.failed)]
    if closed:
        cells += [_ci(s.accuracy), _ci(s.macro_f1), str(s.unparsed)]
    else:
        cells += [_ci(s.comprehensiveness), _ci(s.hallucination)]
    retrieval = [v for k, v in s.retrieval.items() if k.startswith(("recall", "mrr"))]
    cells.append(" / ".join(_fmt(v) for v in retrieval) if retrieval else "–")
    cited = s.citation_recall is not None
    cells.append(f"{_fmt(s.citation_recall)} / {_fmt(s.citation_precision)}" if cited else "–")
    cells.append(f"{_fmt(s.latency_p50_s, 2)} / {_fmt(s.latency_p95_s, 2)}")
    cells.append(f"{_fmt(s.prompt_tokens, 0)} / {_fmt(s.new_tokens, 0)}")
    return [f"**{cell}**" if best and cell else cell for cell in cells]


def _notes(summaries: Sequence[ConfigSummary], skipped: Sequence[Skipped], dataset: Mapping[str, Any]) -> list[str]:
    lines = ["", "n: items scored / items in the set; failed items are in no metric; unparsed outputs count as wrong."]
    subsets = [s for s in summaries if s.by_subset]
    if subsets:
        lines += ["", "## Accuracy by subset", ""]
        names = sorted({name for s in subsets for name in s.by_subset})
        lines += ["| id | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for s in subsets:
            lines.append(f"| {s.config.config_id} | " + " | ".join(_ci(s.by_subset.get(n)) for n in names) + " |")
    malformed = dataset.get("malformed_rows") or []
    if malformed:
        lines += ["", f"{len(malformed)} malformed dataset rows were skipped:"]
        lines += [f"- {row['row']}: {row['reason']}" for row in malformed[:10]]
    if skipped:
        lines += ["", "Combinations not run:"]
        lines += [f"- {s.label}: {s.reason}" for s in skipped[:20]]
    return lines


def _confusions(summaries: Sequence[ConfigSummary]) -> list[str]:
    lines: list[str] = []
    for s in summaries:
        if not s.confusion:
            continue
        columns = list(next(iter(s.confusion.values())))
        lines += ["", f"### Confusion {s.config.config_id}: {s.config.label}", ""]
        lines += ["| gold \\ predicted | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        lines += [f"| {g} | " + " | ".join(str(row[c]) for c in columns) + " |" for g, row in s.confusion.items()]
    return lines


# ---------------------------------------------------------------------------------------------------- plots


def write_plots(run_dir: Path, summaries: Sequence[ConfigSummary], *, dataset_name: str = "all") -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("clinrag: matplotlib is not installed; plots skipped (pip install 'clinrag[plot]')", file=sys.stderr)
        return []
    scored = [s for s in summaries if s.primary is not None and not math.isnan(s.primary.value)]
    if not scored:
        return []
    files = [_shots_plot(plt, run_dir / "accuracy_vs_shots.png", scored)]
    files.append(_dataset_plot(plt, run_dir / "dataset_comparison.png", scored, dataset_name))
    return files


def _series_key(s: ConfigSummary) -> tuple[str, str, str, str]:
    c = s.config
    return (c.selector, c.context_label, c.generator.name, c.scoring)


def shot_series(summaries: Sequence[ConfigSummary]) -> dict[str, dict[str, list[ConfigSummary]]]:
    """template -> series label -> points by shots; 0-shot points join every selector's line of their setting."""
    out: dict[str, dict[str, list[ConfigSummary]]] = {}
    for template in dict.fromkeys(s.config.template for s in summaries):
        rows = [s for s in summaries if s.config.template == template]
        selectors = sorted({s.config.selector for s in rows if s.config.shots}) or ["none"]
        series: dict[str, list[ConfigSummary]] = {}
        for selector in selectors:
            for s in rows:
                if s.config.shots and s.config.selector != selector:
                    continue
                _, context, generator, scoring = _series_key(s)
                label = f"{selector if selector != 'none' else '0-shot'} | {context} | {generator} | {scoring}"
                series.setdefault(label, []).append(s)
        out[template] = {k: sorted(v, key=lambda s: s.config.shots) for k, v in series.items()}
    return out


def _shots_plot(plt: Any, path: Path, summaries: Sequence[ConfigSummary]) -> Path:
    grouped = shot_series(summaries)
    fig, axes = plt.subplots(1, len(grouped), figsize=(6.5 * len(grouped), 4.5), squeeze=False)
    metric = "accuracy" if summaries[0].accuracy is not None else "comprehensiveness"
    for axis, (template, series) in zip(axes[0], grouped.items(), strict=True):
        for n, (label, points) in enumerate(series.items()):
            shift = (n - (len(series) - 1) / 2) * 0.06  # side by side, so equal values do not hide each other
            x = [p.config.shots + shift for p in points]
            y = [p.primary.value for p in points if p.primary]
            low = [p.primary.value - p.primary.low for p in points if p.primary]
            high = [p.primary.high - p.primary.value for p in points if p.primary]
            axis.errorbar(x, y, yerr=[low, high], marker="o", capsize=4, label=label)
        majority = majority_baseline(summaries)
        if majority is not None:
            axis.axhline(majority[1], color="grey", linestyle="--", linewidth=1, label=f"always '{majority[0]}'")
        axis.set_title(f"template {template}")
        axis.set_xlabel("shots (worked examples)")
        axis.set_ylabel(f"{metric} (95% bootstrap CI)")
        axis.set_xticks(sorted({s.config.shots for s in summaries}))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _dataset_plot(plt: Any, path: Path, summaries: Sequence[ConfigSummary], dataset_name: str) -> Path:
    """Grouped bars: one group per configuration, one bar per dataset subset (or the whole set)."""
    subsets = sorted({name for s in summaries for name in s.by_subset}) or [dataset_name]
    fig, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(summaries) * len(subsets)), 4.8))
    width = 0.8 / len(subsets)
    for n, subset in enumerate(subsets):
        values: list[float] = []
        errors: list[list[float]] = [[], []]
        for s in summaries:
            interval = s.by_subset.get(subset) if s.by_subset else s.primary
            value = interval.value if interval else math.nan
            values.append(value)
            errors[0].append(value - interval.low if interval else 0.0)
            errors[1].append(interval.high - value if interval else 0.0)
        x = [i + n * width for i in range(len(summaries))]
        axis.bar(x, values, width, yerr=errors, capsize=3, label=subset)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(summaries))])
    axis.set_xticklabels([_short(s) for s in summaries], rotation=30, ha="right", fontsize=7)
    axis.set_ylabel("accuracy (95% bootstrap CI)" if summaries[0].accuracy else "comprehensiveness (95% CI)")
    axis.set_title("per-dataset comparison")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _short(s: ConfigSummary) -> str:
    c = s.config
    shots = f"{c.shots}-shot {c.selector}" if c.shots else "0-shot"
    return f"{shots}\n{c.context_label} {c.generator.name}"
