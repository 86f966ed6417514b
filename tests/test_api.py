"""The public Python API: the README's example runs as written, and a loaded policy acts
exactly like the run's agent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import mtrl

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no api-example block"
    return m.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _readme_example()
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own example
    policy = scope["policy"]
    assert isinstance(policy, mtrl.Policy)
    assert policy.task_names == ["goal-0", "goal-1", "goal-2", "goal-3"]
    assert scope["result"].success_mean >= 0.0


def test_loaded_policy_predicts_like_the_agent(tmp_path):
    from tests.conftest import tiny_toy_config

    cfg = tiny_toy_config()
    mtrl.train(cfg, tmp_path / "r")
    policy = mtrl.load(tmp_path / "r")
    same = mtrl.load(next((tmp_path / "r" / "checkpoints").glob("ckpt_*800.pt")))
    assert policy.env_steps == same.env_steps == 800
    env = mtrl.make_env(cfg.env, seed=0, evaluation=True)
    obs, _ = env.reset(seed=0)
    batch = policy.predict(obs, env.task_ids)
    assert batch.shape == (4, 2)
    np.testing.assert_array_equal(batch, policy.agent.act(obs, env.task_ids, deterministic=True))
    np.testing.assert_array_equal(same.predict(obs, env.task_ids), batch)
    # one observation, a task by name or id (a batch of one: equal up to float rounding)
    np.testing.assert_allclose(policy.predict(obs[2], "goal-2"), batch[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(policy.predict(obs[2], 2), policy.predict(obs[2], "goal-2"))
    with pytest.raises(ValueError, match="unknown task 'goal-9'"):
        policy.predict(obs[0], "goal-9")
    # the spaces came from metadata.json, not from an env
    assert policy.observation_space == env.single_observation_space
    assert policy.action_space == env.single_action_space
    res = mtrl.evaluate(policy, env, 2)
    assert set(res.success) == set(policy.task_names)
    env.close()


def test_spaces_round_trip_and_forged_ones_are_refused():
    import gymnasium as gym

    from mtrl.api import space_from_json, space_to_json
    from mtrl.rundir import ResumeError

    box = gym.spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 2.0]), dtype=np.float32)
    img = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    for space in (box, img, gym.spaces.Discrete(18)):
        assert space_from_json(space_to_json(space), "m") == space
    assert space_to_json(img)["low"] == 0.0  # uniform bounds stored once
    for bad in ({"type": "Box", "shape": [10**9, 10**9], "dtype": "float32", "low": 0,
                 "high": 1}, {"type": "Box", "shape": [2], "dtype": "object", "low": 0,
                              "high": 1}, {"type": "Tuple"}, None):
        with pytest.raises(ResumeError, match="invalid space"):
            space_from_json(bad, "metadata.json")


def test_public_names():
    for name in ("get_preset", "train", "load", "make_env", "evaluate", "register_combiner",
                 "register_architecture", "register_env", "register_agent"):
        assert callable(getattr(mtrl, name)), name
    with pytest.raises(AttributeError):
        mtrl.nothing_here  # noqa: B018
