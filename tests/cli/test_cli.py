"""The `clinrag` command as a user runs it, with the real (packaged, offline) embedder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.cli.main import main

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]
DEMO = PROJECT / "corpora" / "guidelines"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus built once through the CLI (three documents keep it quick)."""
    root = tmp_path_factory.mktemp("cli")
    sources = root / "sources"
    sources.mkdir()
    for name in ("uncomplicated-cystitis-women.md", "atrial-fibrillation-anticoagulation.md", "asthma-gina.md"):
        shutil.copy(DEMO / name, sources / name)
    out = root / "index"
    code = main(["index", "build", str(sources), "--out", str(out), "--cache-dir", str(root / "cache"), "--quiet"])
    assert code == 0
    return out


def test_help_on_every_command() -> None:
    for argv in (
        ["--help"],
        ["index", "--help"],
        ["index", "build", "--help"],
        ["index", "add", "--help"],
        ["index", "remove", "--help"],
        ["index", "info", "--help"],
        ["index", "verify", "--help"],
        ["search", "--help"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "rag.cli.main", *argv], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, argv
        assert "usage: clinrag" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli.main", "index", "build", "x.md"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--out" in result.stderr


def test_info_verify_search(demo_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "index", "info", str(demo_index), "--json")
    manifest = json.loads(out)
    assert code == 0 and manifest["counts"]["documents"] == 3
    assert manifest["embedder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["embedder"]["dim"] == 384
    code, out, _ = run(capsys, "index", "info", str(demo_index))
    assert code == 0 and "3 documents" in out
    code, out, _ = run(capsys, "index", "verify", str(demo_index))
    assert code == 0 and out.startswith("ok:")
    code, out, _ = run(capsys, "search", "nitrofurantoin for cystitis", "--index", str(demo_index), "--json", "-k", "3")
    hits = json.loads(out)["hits"]
    assert code == 0 and hits[0]["doc_id"] == "uncomplicated-cystitis-women"
    assert hits[0]["year"] and hits[0]["url"].startswith("https://")


def test_add_remove_and_bad_sources(demo_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    shutil.copytree(demo_index, index)
    bad = tmp_path / "scan.pdf"
    bad.write_bytes(b"not a pdf at all")
    code, out, err = run(capsys, "index", "add", str(index), str(DEMO / "migraine-treatment.md"), str(bad), "--json")
    report = json.loads(out)
    assert code == 1 and report["documents"] == 4 and report["vectors"]["reused"] > 0
    assert "scan.pdf" in err and "not a PDF" in err
    code, out, err = run(capsys, "index", "remove", str(index), "--doc", "migraine-treatment")
    assert code == 0 and "3 documents" in out
    code, _, err = run(capsys, "index", "remove", str(index), "--doc", "no-such-doc")
    assert code == 2 and "not in the index" in err
    assert run(capsys, "index", "verify", str(index))[0] == 0


def test_verify_detects_damage(demo_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    shutil.copytree(demo_index, index)
    chunks = next(index.glob("chunks.g*.jsonl"))
    chunks.write_text(chunks.read_text().replace("nitrofurantoin", "NITROFURANTOIN", 1))
    code, _, err = run(capsys, "index", "verify", str(index))
    assert code == 1 and "checksum" in err


def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "index", "info", str(tmp_path / "nowhere"))
    assert code == 2 and "no such index" in err
    code, _, err = run(capsys, "index", "build", str(DEMO), "--out", str(tmp_path / "i"), "--max-tokens", "8")
    assert code == 2 and "max_tokens" in err
    code, _, err = run(
        capsys, "index", "build", str(DEMO), "--out", str(tmp_path / "j"), "--embedder", str(tmp_path / "no-model")
    )
    assert code == 2 and "cannot load" in err


def test_bad_queries_are_clear_errors(demo_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for query in ("", "   ", "?!.,"):
        code, _, err = run(capsys, "search", query, "--index", str(demo_index))
        assert code == 2 and "query" in err
    code, out, _ = run(capsys, "search", "warfarin\x00\x07 valve " + "x" * 100_000, "--index", str(demo_index))
    assert code == 0 and out


def test_sharded_index_through_the_cli(demo_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = demo_index.parent / "sources"
    cache = str(demo_index.parent / "cache")  # the single build embedded these chunks: the shards embed nothing
    out = tmp_path / "sharded"
    code, text, _ = run(capsys, "index", "build", str(sources), "--out", str(out), "--shards", "2",
                        "--cache-dir", cache, "--quiet", "--json")  # fmt: skip
    report = json.loads(text)
    assert code == 0 and report["shards"] == 2 and report["vectors"]["embedded"] == 0
    assert sum(s["searchable_chunks"] for s in report["per_shard"]) == report["searchable_chunks"]
    code, text, _ = run(capsys, "index", "info", str(out))
    assert code == 0 and "sharded, 2 shards" in text
    code, text, _ = run(capsys, "index", "verify", str(out), "--json")
    assert code == 0 and json.loads(text)["counts"]["shards"] == 2
    single = json.loads(run(capsys, "search", "nitrofurantoin for cystitis", "--index", str(demo_index), "--json")[1])
    sharded = json.loads(run(capsys, "search", "nitrofurantoin for cystitis", "--index", str(out), "--json")[1])
    assert [h["chunk_id"] for h in sharded["hits"]] == [h["chunk_id"] for h in single["hits"]]

    code, _, err = run(capsys, "index", "build", str(sources), "--out", str(tmp_path / "x"), "--ray", "local")
    assert code == 2 and "give --shards N" in err
    code, _, err = run(capsys, "ask", "how is cystitis treated?", "--index", str(out), "--generator", "extractive")
    assert code == 2 and "a sharded index" in err
    shard = next((out / "g1").glob("shard-001"))
    next(shard.glob("chunks.g*.jsonl")).write_text("{}\n")
    code, _, err = run(capsys, "index", "verify", str(out))
    assert code == 1 and "shard-001" in err
    code, _, err = run(capsys, "search", "cystitis", "--index", str(out))
    assert code == 2 and "shard-001" in err
