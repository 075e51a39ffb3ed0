"""The package version, kept in one place (read by the build backend too)."""

__version__ = "0.5.7"
