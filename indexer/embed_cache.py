"""Embedding cache keyed by (model, chunk content hash), in SQLite: a rebuild never embeds unchanged text again.

SQLite gives atomic batched writes and safe concurrent readers with no server and no pickle; vectors are
stored as raw float32 bytes. Each finished batch is committed, so a killed build keeps what it embedded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID
"""
_BATCH = 500  # keys per SELECT, under SQLite's bound-variable limit


class EmbeddingCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_many(self, model: str, keys: Sequence[str], dim: int | None = None) -> dict[str, npt.NDArray[np.float32]]:
        found: dict[str, npt.NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _BATCH):
            batch = unique[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            rows = self._conn.execute(
                f"SELECT key, dim, vec FROM vectors WHERE model = ? AND key IN ({marks})",
                [model, *batch],
            )
            for key, row_dim, blob in rows:
                if dim is None or row_dim == dim:
                    found[key] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, npt.NDArray[np.float32]]]) -> None:
        rows = [
            (model, key, int(vec.shape[0]), np.ascontiguousarray(vec, dtype=np.float32).tobytes()) for key, vec in items
        ]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO vectors (model, key, dim, vec) VALUES (?, ?, ?, ?)", rows)
