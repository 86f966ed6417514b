"""Errors shared by the whole library (imported by the lightweight modules: no torch here)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values."""


class CollectorError(RuntimeError):
    """Collecting stopped for good: an env raised in a remote env runner, or a runner could not
    be started or restarted (:mod:`mtrl.collect.ray`). The message is one line that names the
    runner and its tasks."""
