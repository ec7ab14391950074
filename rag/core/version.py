"""The package version, in one place (the bundle manifests record it)."""

__version__ = "0.1.0"
