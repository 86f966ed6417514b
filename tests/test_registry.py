"""Registries (envs, architectures, combiners, agents) and the nested agent config."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_toy_config

from mtrl import config as C
from mtrl.cli import main
from mtrl.optim.combiners import GradientCombiner
from mtrl.presets import get_preset
from mtrl.registry import (
    AGENTS,
    ARCHITECTURES,
    COMBINERS,
    ENVS,
    register_architecture,
    register_combiner,
)


def test_builtin_parts_are_registered_where_they_are_defined():
    assert {"mt10", "mt50", "metaworld", "toy-reach", "toy-reach-discrete", "atari"} <= set(
        ENVS.names())
    assert ENVS.get("atari")["discrete"] and ENVS.get("atari")["image"]
    assert not ENVS.get("mt10")["discrete"]
    assert set(ARCHITECTURES.names()) == {"mlp", "multihead", "separate", "soft-modular",
                                          "routing", "moe", "moore", "paco", "residual"}
    assert {e.name for e in COMBINERS if e["balances_losses"]} == {"gradnorm", "uncertainty",
                                                                    "dwa"}
    assert {"mtsac", "mta2c", "distral-sac", "distral-a2c", "distill", "mtimpala"} <= set(
        AGENTS.names())
    assert AGENTS.get("mta2c")["on_policy"] and AGENTS.get("mtsac")["continuous_only"]
    assert AGENTS.get("mtimpala")["on_policy"] and AGENTS.get("mtimpala")["sections"] == (
        "impala",)


def test_unknown_names_list_the_registered_ones_and_the_closest():
    cfg = get_preset("toy-mtsac")
    cfg.agent.actor_arch = "multi-head"
    with pytest.raises(C.ConfigError) as e:
        C.validate(cfg)
    msg = str(e.value)
    assert "agent.actor_arch='multi-head' is not valid" in msg and "soft-modular" in msg
    assert "did you mean 'multihead'?" in msg
    cfg = get_preset("toy-mtsac")
    cfg.env.name = "toy-rech"
    with pytest.raises(C.ConfigError, match="did you mean 'toy-reach'"):
        C.validate(cfg)


def test_a_registered_architecture_and_combiner_train_through_the_loop(tmp_path):
    """A user's parts: one file each, no library edit; the config validator accepts them and
    the loop trains with them."""
    from mtrl.modules.nets import MLPNet

    built = []

    def tiny(in_dim, out_dim, num_tasks, hidden, arch_cfg):
        built.append((in_dim, out_dim))
        return MLPNet(in_dim, out_dim, num_tasks, [8])

    class HalfMean(GradientCombiner):
        """The mean objective at half the step size."""

        name = "half-mean"

        def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
            return torch.full_like(task_losses, 0.5)

    register_architecture("tiny-test-arch", tiny)
    register_combiner("half-mean-test", lambda cfg: HalfMean(cfg.diagnostics_every))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_architecture("tiny-test-arch", tiny)
        cfg = tiny_toy_config(agent__actor_arch="tiny-test-arch",
                              agent__critic_arch="tiny-test-arch",
                              agent__critic_combiner="half-mean-test")
        from mtrl.runner import Trainer

        trainer = Trainer(cfg, tmp_path / "run")
        assert isinstance(trainer.agent.critic_combiner, HalfMean)
        result = trainer.run()
        assert result.updates > 0
        # the actor (obs 2 → mean and log-std of 2 actions), twin critics and their targets
        assert built == [(2, 4)] + [(4, 1)] * 4
    finally:
        ARCHITECTURES.unregister("tiny-test-arch")
        COMBINERS.unregister("half-mean-test")


def test_algorithm_fields_are_nested_and_old_names_still_read():
    cfg = get_preset("toy-a2c")
    assert cfg.agent.a2c.n_steps == 5 and cfg.agent.a2c.lr == 2e-3
    # mtrl 0.1 command-line names are redirected to their sections ...
    C.set_override(cfg, "agent.n-steps", "7")
    C.set_override(cfg, "agent.lr", "1e-3")
    assert cfg.agent.a2c.n_steps == 7 and cfg.agent.a2c.lr == 1e-3
    # ... and so are the flat fields of an older run's config.yaml
    old = C.to_dict(get_preset("toy-distral"))
    agent = old["agent"]
    for section in ("sac", "a2c", "ppo", "distral", "distill"):
        agent.pop(section)
    agent.update({"n_steps": 9, "lr": 3e-3, "distral_alpha": 0.25, "distral_columns": 1,
                  "actor_lr": 1e-4})
    import yaml

    loaded = C.load_yaml(yaml.safe_dump(old))
    assert loaded.agent.a2c.n_steps == 9 and loaded.agent.a2c.lr == 3e-3
    assert loaded.agent.distral.alpha == 0.25 and loaded.agent.sac.actor_lr == 1e-4


def test_sac_has_no_single_learning_rate_and_python_typos_fail():
    cfg = get_preset("mt10-mtsac")
    with pytest.raises(C.ConfigError, match=r"agent\.lr is not used by agent\.name='mtsac'.*"
                                            r"agent\.sac\.actor_lr"):
        C.set_override(cfg, "agent.lr", "1e-3")
    with pytest.raises(AttributeError, match=r"agent\.n_steps moved to agent\.a2c\.n_steps"):
        cfg.agent.n_steps = 3
    with pytest.raises(AttributeError, match="did you mean 'batch_size'"):
        cfg.agent.batch_sise = 3
    with pytest.raises(AttributeError, match="did you mean 'every'"):
        cfg.eval.evry = 3


def test_overrides_of_fields_the_run_does_not_use_are_refused(capsys):
    assert main(["train", "toy-mtsac", "--agent.a2c.n-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "--agent.a2c.n-steps: agent.a2c.n_steps is not used by agent.name='mtsac'" in err
    assert "mta2c" in err and "Traceback" not in err
    assert main(["train", "toy-mtsac", "--env.frame-skip", "2"]) == 2
    err = capsys.readouterr().err
    assert "env.frame_skip is not used by env.name='toy-reach'" in err


def test_a_registered_env_and_agent_train_through_the_loop(tmp_path):
    """A new env is one registration (builder, task names, checks); so is a new agent (builder
    and data path): the validator, the CLI's config and the loop take them unchanged."""
    from mtrl.agents.specs import build_sac, replay_path
    from mtrl.envs.toy import make_toy_env
    from mtrl.registry import register_agent, register_env
    from mtrl.runner import train

    def build(cfg, *, seed, evaluation=False, render=False):
        env = make_toy_env(2, envs_per_task=1 if evaluation else 2, max_episode_steps=20,
                           seed=seed, evaluation=evaluation)
        env.task_names = ["left", "right"]
        if evaluation:
            env.set_terminate_on_success(True)
        return env

    register_env("two-goals-test", build, task_names=lambda cfg: ["left", "right"])
    register_agent("sac-alias-test", build_sac, data_path=replay_path, continuous_only=True,
                   sections=("sac",))
    try:
        cfg = tiny_toy_config(env__name="two-goals-test", agent__name="sac-alias-test",
                              agent__batch_size=32)
        cfg.eval.final = True
        result = train(cfg, tmp_path / "run")
        assert result.updates > 0
        assert set(result.final_eval.success) == {"left", "right"}
        cfg.env.num_tasks = 3  # a field the new env does not declare
        with pytest.raises(C.ConfigError, match=r"env\.num_tasks=3 is only used with"):
            C.validate(cfg)
    finally:
        ENVS.unregister("two-goals-test")
        AGENTS.unregister("sac-alias-test")
