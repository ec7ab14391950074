"""`python -m rag.cli`: the same as the `clinrag` command."""

import sys

from rag.cli.main import main

sys.exit(main())
