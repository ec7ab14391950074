"""Importing the packages does no work: no model, no torch, no environment changes."""

from __future__ import annotations

import subprocess
import sys


def test_imports_are_light_and_side_effect_free() -> None:
    code = (
        "import os, sys; before = dict(os.environ);"
        "import rag, rag.cli.main, rag.retrieval.search, rag.retrieval.langchain, rag.cli.evaluate, indexer;"
        "import rag.cli.index;"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'faiss') if m in sys.modules];"
        "assert not heavy, heavy;"
        "assert dict(os.environ) == before, 'environment changed at import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
