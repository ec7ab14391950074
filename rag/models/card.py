"""The training card: a JSON file beside the adapter saying what it was trained on, how, and how well it does.

It holds the data files' SHA-256 and the split's PMIDs (so the validation items can be checked never to have
been trained on), the example counts, base model, LoRA parameters, seed, timings, metrics before and after, and
the per-label biases fitted for closed-form scoring (read back by `card_biases`).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.core.cpu import cpu_flags, read_cpuinfo
from rag.core.errors import ConfigError

CARD_FORMAT = "clinrag-training-card/1"
CARD_NAME = "training_card.json"


@dataclass
class TrainingCard:
    base_model: str
    seed: int
    config: dict[str, Any]  # TrainConfig.to_json()
    budgets: dict[str, Any]
    data: dict[str, Any]  # files -> sha256, split, counts
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # "before" / "after" (and "validation" once evaluated)
    calibration: dict[str, Any] = field(default_factory=dict)  # setting -> {"labels": [...], "bias": [...]}
    adapter: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # steps, losses
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    machine: dict[str, Any] = field(default_factory=lambda: machine_facts())

    def to_json(self) -> dict[str, Any]:
        return {"format": CARD_FORMAT, **asdict(self)}

    def write(self, folder: Path) -> Path:
        path = folder / CARD_NAME
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def _cpu_model() -> str:
    """CPU model and bf16 support: the same recipe trained in 34 min on one 2-core machine, 17 on another."""
    info = read_cpuinfo()
    if info is None:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = cpu_flags(info)
    extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return " ".join([name or platform.processor(), *extras]).strip()


def machine_facts() -> dict[str, Any]:
    import os
    from importlib.metadata import PackageNotFoundError, version

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
    }
    for package in ("torch", "transformers", "peft"):
        try:
            facts[package] = version(package)
        except PackageNotFoundError:
            facts[package] = None
    return facts


def read_card(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CARD_NAME
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the training card ({exc.strerror}); is this an adapter folder?"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: the training card is not valid JSON ({exc}); re-run clinrag finetune") from exc
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ConfigError(f"{path}: not a {CARD_FORMAT} training card; re-run clinrag finetune to write one")
    return card


def card_biases(card: dict[str, Any], setting: str, labels: tuple[str, ...]) -> list[float] | None:
    """The fitted per-label biases for a closed-form setting ("pubmedqa-gold", "pubmedqa-rag"), if any."""
    entry = card.get("calibration", {}).get(setting)
    if not isinstance(entry, dict) or tuple(entry.get("labels", ())) != labels:
        return None
    return [float(b) for b in entry["bias"]]


def update_card(folder: str | Path, key: str, value: Any) -> None:
    """Set one top-level metrics entry of an existing card (evaluation results written after training)."""
    card = read_card(folder)
    card.setdefault("metrics", {})[key] = value
    path = Path(folder) / CARD_NAME
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
