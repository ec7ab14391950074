"""What a run's numbers depend on beyond its grid: content hashes of templates, pool, index and adapters, and
the versions of the packages that computed them."""

from __future__ import annotations

import hashlib
import platform
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from rag.answering.prompts import REGISTRY, PromptTemplate
from rag.core.errors import ConfigError
from rag.core.files import file_sha256
from rag.evaluation.qa.grid import Grid

PACKAGES = (
    "clinrag",
    "torch",
    "transformers",
    "sentence-transformers",
    "peft",
    "numpy",
    "faiss-cpu",
    "pydantic",
    "jinja2",
    "matplotlib",
)
_INCLUDE = re.compile(r"""{%-?\s*include\s+["']([^"']+)["']""")


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def fingerprints(templates: Mapping[str, PromptTemplate], grid: Grid, index: Path | None) -> dict[str, str]:
    """ "template:<name>", "pool", "index" and "adapter:<generator>" -> sha256 of what decides predictions."""
    prints = {f"template:{name}": template_sha256(t) for name, t in templates.items()}
    if grid.pool is not None:
        pool = Path(grid.pool.path)
        if not pool.is_file():
            raise ConfigError(f"{pool}: the example pool file does not exist; fix pool.path in the grid or --pool")
        prints["pool"] = file_sha256(pool)
    if index is not None:
        manifest = index / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(f"{index}: not an index bundle (no manifest.json); build one with `clinrag index build`")
        prints["index"] = file_sha256(manifest)
    for spec in grid.generators:
        adapter = spec.adapter_path()
        if adapter is not None:
            prints[f"adapter:{spec.name}"] = adapter_sha256(adapter)
    return prints


def template_sha256(template: PromptTemplate) -> str:
    """The registry entry and every file it reads (system, user, includes, examples)."""
    digest = hashlib.sha256()
    entry = tomllib.loads((template.folder / REGISTRY).read_text(encoding="utf-8"))["templates"][template.name]
    digest.update(repr(sorted(entry.items())).encode())
    pending = [template.system, template.user] + ([str(entry["examples"])] if entry.get("examples") else [])
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        text = (template.folder / name).read_text(encoding="utf-8")
        digest.update(name.encode() + b"\0" + text.encode())
        pending += _INCLUDE.findall(text)
    return digest.hexdigest()


def adapter_sha256(folder: Path) -> str:
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        if (folder / name).is_file():
            return file_sha256(folder / name)
    raise ConfigError(
        f"{folder}: no LoRA adapter there (adapter_model.safetensors / adapter_config.json); point the generator's "
        "adapter at the folder written by `clinrag finetune`"
    )
