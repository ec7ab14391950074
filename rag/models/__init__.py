"""Everything that loads weights: embedders (`embed`), cross-encoders (`crossencoder`, the network behind the
reranker and the support checker), generator backends (`generators`: transformers, llama.cpp, an OpenAI-compatible
endpoint) and the training cards that describe packaged artefacts (`card`). Importing a module here loads no model.

May import: `rag.core`, `rag.text`.
"""
