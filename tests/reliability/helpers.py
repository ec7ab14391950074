"""Shared by the reliability tests (fuzz, malformed files, integrity, crash trials, concurrency).

Trial counts default to what keeps the whole suite fast; the figures in benchmarks/RELIABILITY.md come from
raising them with the environment variables named at each use.
"""

from __future__ import annotations

import os
from pathlib import Path

from rag.core.config import IndexSettings
from rag.testing import HashEmbedder

# Conditions and treatments combined into distinct, searchable little guidelines.
CONDITIONS = [
    ("cystitis", "nitrofurantoin 100 mg twice daily for five days"),
    ("hypertension", "a thiazide diuretic or an ACE inhibitor"),
    ("asthma", "budesonide-formoterol as needed"),
    ("gout", "colchicine 500 micrograms twice daily"),
    ("migraine", "sumatriptan 50 mg at onset"),
    ("psoriasis", "topical calcipotriol with a corticosteroid"),
    ("scabies", "permethrin 5% cream applied twice a week apart"),
    ("anaemia", "oral ferrous sulfate 200 mg daily"),
    ("impetigo", "hydrogen peroxide 1% cream for localised disease"),
    ("acne", "benzoyl peroxide with adapalene gel"),
    ("otitis", "amoxicillin 500 mg three times daily"),
    ("rosacea", "ivermectin 1% cream once daily"),
]


def trials(variable: str, default: int) -> int:
    """A trial count from the environment (for the big runs in the report), else the fast default."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"${variable}={raw!r}: expected a whole number of trials, e.g. {variable}=200") from exc
    if value < 1:
        raise ValueError(f"${variable}={value}: the number of trials must be at least 1")
    return value


def embedder() -> HashEmbedder:
    return HashEmbedder(dim=32, max_tokens=64)


def index_settings(cache: Path) -> IndexSettings:
    return IndexSettings.model_validate(
        {"cache_dir": str(cache), "chunker": {"max_tokens": 48, "overlap_tokens": 8}, "progress": False}
    )


def write_guideline(folder: Path, condition: str, treatment: str, *, year: int = 2020) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{condition}.md"
    path.write_text(
        f"---\ntitle: {condition.title()} guideline\nissuer: Test Society\nyear: {year}\ntype: guideline\n---\n"
        f"# {condition.title()} guideline\n\n## Treatment\n\nFirst-line treatment of {condition} is {treatment}. "
        f"Review patients with {condition} after two weeks.\n\n## Referral\n\nRefer {condition} that does not "
        f"improve, or that recurs more than {len(condition)} times a year, to a specialist clinic.\n",
        encoding="utf-8",
    )
    return path


def write_corpus(folder: Path, count: int, *, start: int = 0) -> list[Path]:
    return [write_guideline(folder, *CONDITIONS[i]) for i in range(start, start + count)]
