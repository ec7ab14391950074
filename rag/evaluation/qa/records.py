"""predictions.jsonl: one line per (configuration, item) attempt, appended and synced as each item finishes.

A crash loses at most the item in flight: a half-written last line is cut off when the file is reopened, and
the items already on disk are skipped on the next run. A failed attempt is retried on the next run; the
latest line for a key is the one that counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag.core.errors import ConfigError

Status = Literal["ok", "failed"]
Key = tuple[str, str]  # (config_id, item_id)


@dataclass(frozen=True)
class Prediction:
    config_id: str
    item_id: str
    subset: str
    status: Status
    gold: str
    error: str | None = None
    prompt_sha256: str | None = None
    shot_ids: tuple[str, ...] = ()
    retrieved_ids: tuple[str, ...] = ()  # chunk ids, best first
    retrieved_docs: tuple[str, ...] = ()  # their documents, each at its best rank
    raw_output: str = ""
    label_scores: dict[str, float] | None = None  # label -> log-likelihood (+ bias), likelihood scoring
    parsed: str | None = None  # the answer read from the output (None: none could be read)
    correct: bool | None = None  # closed-form only
    latency_s: float = 0.0
    prompt_tokens: int = 0
    new_tokens: int = 0
    citations: dict[str, int] | None = None  # statements, supported, citations, relevant (ALCE)
    kqa: dict[str, int] | None = None  # must_have, supported, statements, contradicted
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the label bias that chose `parsed`

    @property
    def key(self) -> Key:
        return (self.config_id, self.item_id)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("shot_ids", "retrieved_ids", "retrieved_docs"):
            data[name] = list(data[name])
        data["latency_s"] = round(self.latency_s, 4)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("shot_ids", "retrieved_ids", "retrieved_docs"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@dataclass(frozen=True)
class StoreReadout:
    predictions: dict[Key, Prediction]
    unreadable_lines: int
    truncated_tail: bool


class PredictionStore:
    """Append-only JSON lines; `read` repairs a torn last line so appends start on a fresh line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> StoreReadout:
        if not self.path.exists():
            return StoreReadout({}, 0, False)
        truncated = self._cut_torn_tail()
        latest: dict[Key, Prediction] = {}
        unreadable = 0
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    prediction = Prediction.from_json(json.loads(line))
                except (json.JSONDecodeError, TypeError, ValueError):
                    unreadable += 1
                    continue
                latest[prediction.key] = prediction
        return StoreReadout(latest, unreadable, truncated)

    def append(self, prediction: Prediction) -> None:
        line = json.dumps(prediction.to_json(), ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())  # the item is on disk before the next one starts

    def _cut_torn_tail(self) -> bool:
        try:
            with self.path.open("rb+") as fh:
                data = fh.read()
                if not data or data.endswith(b"\n"):
                    return False
                fh.truncate(data.rfind(b"\n") + 1)
                return True
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot repair the predictions file ({exc.strerror})") from exc
