"""clinrag core: data types, settings, embedders, the index bundle format, and (later) retrieval and answers."""

__version__ = "0.1.0"
