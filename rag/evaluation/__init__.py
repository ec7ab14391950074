"""Evaluation: retrieval metrics and harnesses that score the engine on standard data sets."""
