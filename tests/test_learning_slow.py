"""Learning checks that take minutes: run with `make test-slow` (pytest -m slow)."""

from __future__ import annotations

import pytest

from mtrl.evaluation import evaluate_run
from mtrl.presets import get_preset
from mtrl.runner import train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_mtsac_learns_on_three_seeds(tmp_path, seed):
    cfg = get_preset("toy-mtsac")
    cfg.seed = seed
    cfg.device = "cpu"
    cfg.log.progress_bar = False
    train(cfg, tmp_path / f"s{seed}")
    ev = evaluate_run(str(tmp_path / f"s{seed}"))
    assert ev.result.success_mean >= 0.9, ev.result.table()
