"""mtrl: multi-task reinforcement learning in PyTorch.

The public API (imported lazily, so ``import mtrl`` stays fast)::

    import mtrl
    cfg = mtrl.get_preset("toy-mtsac")
    result = mtrl.train(cfg, "runs/toy")          # -> TrainResult
    policy = mtrl.load("runs/toy")                # -> Policy (latest checkpoint)
    action = policy.predict(obs, "goal-0")        # one observation, a task name or id
    env = mtrl.make_env(cfg.env, seed=0, evaluation=True)
    print(mtrl.evaluate(policy, env, 10).table())

Extensions register themselves: ``mtrl.register_architecture``, ``register_combiner``,
``register_env``, ``register_agent``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "get_preset": "mtrl.presets",
    "train": "mtrl.runner",
    "TrainResult": "mtrl.runner",
    "load": "mtrl.api",
    "Policy": "mtrl.api",
    "make_env": "mtrl.envs",
    "evaluate": "mtrl.evaluation",
    "evaluate_run": "mtrl.evaluation",
    "TrainConfig": "mtrl.config",
    "ConfigError": "mtrl.errors",
    "register_architecture": "mtrl.registry",
    "register_combiner": "mtrl.registry",
    "register_env": "mtrl.registry",
    "register_agent": "mtrl.registry",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mtrl' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
