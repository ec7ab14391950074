"""`clinrag index build corpora` stops at once (exit 2, one line naming what to build); no model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.cli.main import main

CORPORA = Path(__file__).resolve().parents[2] / "corpora"


@pytest.mark.parametrize("extra", [[], ["--shards", "2"]])
def test_building_the_corpora_collection_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    out = tmp_path / "index"
    argv = ["index", "build", str(CORPORA), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    code = main([*argv, *extra])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"clinrag: error: {CORPORA}: holds several corpora (guidelines/, datasets/")
    assert f"build one of them, e.g. clinrag index build {CORPORA / 'guidelines'}" in stderr
    assert not out.exists()


def test_building_the_examples_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["index", "build", str(CORPORA / "examples"), "--out", str(tmp_path / "index"), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2 and "corpus = false" in stderr and "clinrag index build" in stderr
