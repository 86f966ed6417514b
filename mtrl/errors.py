"""Errors shared by the whole library (imported by the lightweight modules: no torch here)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values."""
