"""The `clinrag` command: builds the parser from each subcommand's module in `rag.cli` and dispatches.

The command line is the application layer that composes `rag` and `indexer`; library code in `rag` never imports
`indexer`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from rag.cli.options import EXIT_USAGE
from rag.core.errors import ClinragError
from rag.core.version import __version__


def build_parser() -> argparse.ArgumentParser:
    from rag.cli.ask import register as register_ask
    from rag.cli.evaluate import register as register_eval
    from rag.cli.finetune import register as register_finetune
    from rag.cli.index import register as register_index
    from rag.cli.search import register as register_search
    from rag.cli.train import register as register_train

    parser = argparse.ArgumentParser(
        prog="clinrag",
        description="Retrieval-augmented clinical question answering over guidelines and literature.",
    )
    parser.add_argument("--version", action="version", version=f"clinrag {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_index(commands)
    register_search(commands)
    register_ask(commands)
    register_eval(commands)
    register_finetune(commands)
    register_train(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ClinragError as exc:
        print(f"clinrag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:  # a setting given on the command line that its settings type refuses
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"clinrag: error: {problems}; see `clinrag COMMAND --help` for the allowed values", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "clinrag: interrupted; the index on disk is unchanged or fully updated, never half-written", file=sys.stderr
        )
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
