"""One lock around NumPy array loads.

`np.load` parses every .npy header with `ast.literal_eval`. On CPython before 3.12, building Python AST objects
in two threads at once can fail with "SystemError: AST constructor recursion depth mismatch" (CPython
gh-106905), which made concurrent `Searcher.load` calls fail now and then. Loads are rare and short (headers
only; arrays are read or memory-mapped afterwards), so serialising them costs nothing measurable.
"""

from __future__ import annotations

import threading

NUMPY_LOAD_LOCK = threading.Lock()
