"""Shared fixtures. Real data is read from ../shared/data beside the project, never copied into it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.embed import HashEmbedder

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLINRAG_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found: the real data sets live in ../shared/data beside the project")
    return SHARED_DATA


@pytest.fixture()
def fake_embedder() -> HashEmbedder:
    return HashEmbedder(dim=32, max_tokens=64)
