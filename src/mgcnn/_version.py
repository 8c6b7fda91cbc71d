"""The package version (a module of its own, so that any part can import it without importing the package)."""

__version__ = "0.2.0"
