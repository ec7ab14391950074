"""Cross-encoders (a text pair read together -> label probabilities): the support checker and the reranker."""
