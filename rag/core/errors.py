"""Exceptions a user can act on. Every message names the file, the problem and the fix."""

from __future__ import annotations


class ClinragError(Exception):
    """Base class: an error caused by input or configuration, reported without a traceback by the CLI."""


class ConfigError(ClinragError, ValueError):
    """A setting is unknown, out of range or inconsistent."""


class BundleError(ClinragError):
    """An index bundle is missing, damaged or cannot be written."""


class BundleMismatchError(BundleError):
    """An index bundle was built with a different embedder, dimension or format than the caller uses."""


class BundleLockedError(BundleError):
    """Another process is writing the same index bundle."""


class ModelLoadError(ClinragError):
    """A model could not be found or loaded (offline machines cannot download from a hub)."""


class SourceError(ClinragError):
    """A source file could not be read; loaders turn this into a LoadFailure instead of stopping a build."""
