"""The foundation every other package stands on: the data types that flow through the system (`types`), the one
typed settings object (`config`), the error hierarchy (`errors`), file helpers (`files`: streamed SHA-256, timestamps),
the package version, CPU facts (`cpu`) and the Ray connection (`ray_cluster`).

May import: the standard library and third-party packages only; nothing else in `rag` or `indexer`.
"""
