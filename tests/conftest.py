from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtrl.config import TrainConfig
from mtrl.presets import get_preset


@pytest.fixture(autouse=True)
def _quiet_and_deterministic():
    warnings.filterwarnings("ignore", module=r"gymnasium\..*")
    torch.set_num_threads(1)
    yield


def tiny_toy_config(**changes) -> TrainConfig:
    """A toy-mtsac config small enough for unit tests (a second or two per run)."""
    cfg = get_preset("toy-mtsac")
    cfg.total_steps = 800
    cfg.warmup_steps = 200
    cfg.agent.actor_hidden = [16, 16]
    cfg.agent.critic_hidden = [16, 16]
    cfg.agent.batch_size = 32
    cfg.replay.capacity = 4_000
    cfg.eval.every = 0
    cfg.eval.final = False
    cfg.eval.episodes_per_task = 2
    cfg.log.every = 200
    cfg.log.progress_bar = False
    cfg.checkpoint.every = 400
    cfg.device = "cpu"
    return apply_changes(cfg, changes)


def apply_changes(cfg: TrainConfig, changes: dict) -> TrainConfig:
    """Set ``section__field=value`` changes on ``cfg`` (``collector__runners=4``)."""
    for key, value in changes.items():
        obj = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, value)
    return cfg


@contextlib.contextmanager
def plugin_file(path: Path, source: str) -> Iterator[str]:
    """Write a plug-in file and load it into this process (tests that validate configs naming
    its envs; worker processes load it themselves through cfg.plugins); the registries, the
    loaded plug-ins and their modules are restored afterwards."""
    from mtrl import plugins
    from mtrl.registry import REGISTRIES

    for registry in REGISTRIES:
        registry.names()
    saved = [(r, dict(r._entries)) for r in REGISTRIES]
    loaded, files = dict(plugins._loaded), dict(plugins._file_modules)
    modules = set(sys.modules)
    path.write_text(source)
    plugins.load_plugins([str(path)])
    try:
        yield str(path)
    finally:
        for registry, entries in saved:
            registry._entries.clear()
            registry._entries.update(entries)
        plugins._loaded.clear()
        plugins._loaded.update(loaded)
        plugins._file_modules.clear()
        plugins._file_modules.update(files)
        for name in set(sys.modules) - modules:
            if name.startswith("mtrl_plugin_"):
                del sys.modules[name]
