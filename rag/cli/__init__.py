"""The `clinrag` command: every subcommand (`index`, `search`, `ask`, `eval`, `train`, `finetune`) and the options
they share (`options`). The only package that composes `rag` with `indexer`.

May import: anything. Nothing imports it.
"""

from rag.cli.main import main

__all__ = ["main"]
