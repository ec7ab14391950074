"""The index bundle on disk: its format, atomic generations, checksums and loading (`store`), sharded indexes
(`shards`), integrity checks (`verify`), the BM25 term counts and scoring (`sparse`) and the FAISS indexes (`dense`).

May import: `rag.core`, `rag.text`. It knows nothing of models: vectors arrive already computed.
"""
