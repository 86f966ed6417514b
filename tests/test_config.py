from __future__ import annotations

import re

import pytest
import torch

from mtrl import config as C
from mtrl.config import ConfigError
from mtrl.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate_and_roundtrip_yaml(name):
    cfg = get_preset(name)
    C.validate(cfg)
    again = C.load_yaml(C.dump_yaml(cfg))
    assert again == cfg


def test_meta_world_presets_use_the_baseline_hyperparameters():
    mt10 = get_preset("mt10-mtsac")
    assert mt10.agent.actor_hidden == [400, 400] and mt10.agent.critic_hidden == [400, 400]
    assert mt10.agent.batch_size == 1280 and mt10.agent.batch_size // 10 == 128
    assert mt10.replay.capacity == 1_000_000
    assert (mt10.agent.sac.actor_lr, mt10.agent.gamma, mt10.agent.sac.tau) == (3e-4, 0.99, 0.005)
    assert mt10.updates_per_step == 1
    mt50 = get_preset("mt50-mtsac")
    assert mt50.agent.batch_size % 50 == 0
    assert len(C.task_names(mt50.env)) == 50


def _msg(cfg) -> str:
    with pytest.raises(ConfigError) as e:
        C.validate(cfg)
    return str(e.value)


def test_batch_not_divisible_names_field_and_suggests_values():
    cfg = get_preset("mt10-mtsac")
    cfg.agent.batch_size = 1000 + 5
    msg = _msg(cfg)
    assert "agent.batch_size=1005" in msg and "divisible" in msg and "10" in msg
    assert "1000" in msg and "1010" in msg


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        ("agent.sac.actor_lr", 0.0, "agent.sac.actor_lr=0.0 must be > 0"),
        ("agent.sac.critic_lr", -1e-3, "agent.sac.critic_lr"),
        ("agent.batch_size", 0, "agent.batch_size=0 must be > 0"),
        ("replay.capacity", -5, "replay.capacity"),
        ("total_steps", 0, "total_steps=0 must be > 0"),
        ("agent.gamma", 1.0, "agent.gamma=1.0 must be in [0, 1)"),
        ("agent.sac.tau", 0.0, "agent.sac.tau"),
        ("eval.episodes_per_task", 0, "eval.episodes_per_task"),
        ("checkpoint.keep_last", 0, "checkpoint.keep_last"),
        ("device", "tpu", "device='tpu' is not valid; allowed: auto, cpu, cuda"),
        ("env.vector_strategy", "threads", "allowed: sync, async"),
        ("agent.actor_combiner", "pcgradx", "agent.actor_combiner='pcgradx'"),
    ],
)
def test_bad_values_name_the_field(path, value, expect):
    cfg = get_preset("mt10-mtsac")
    *parents, leaf = path.split(".")
    obj = cfg
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, leaf, value)
    assert expect in _msg(cfg)


def test_hidden_sizes_must_be_positive():
    cfg = get_preset("toy-mtsac")
    cfg.agent.critic_hidden = [64, 0]
    assert "agent.critic_hidden" in _msg(cfg)


def test_unknown_env_and_task_list_valid_names():
    cfg = get_preset("mt10-mtsac")
    cfg.env.name = "mt11"
    msg = _msg(cfg)
    assert "env.name='mt11'" in msg and "mt10" in msg and "toy-reach" in msg
    cfg.env.name = "metaworld"
    cfg.env.tasks = ["reach-v3", "fly-v3"]
    msg = _msg(cfg)
    assert "fly-v3" in msg and "push-v3" in msg  # lists the valid task names
    cfg.env.tasks = []
    assert "env.tasks is empty" in _msg(cfg)


def test_metaworld_needs_one_env_per_task():
    cfg = get_preset("mt10-mtsac")
    cfg.env.envs_per_task = 2
    assert "env.envs_per_task=2" in _msg(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_rejected():
    cfg = get_preset("toy-mtsac")
    cfg.device = "cuda"
    msg = _msg(cfg)
    assert "device='cuda'" in msg and "not available" in msg


def test_overrides_parse_by_field_type():
    cfg = get_preset("mt10-mtsac")
    C.set_override(cfg, "agent.batch-size", "640")
    C.set_override(cfg, "agent.actor_hidden", "256,256,256")
    C.set_override(cfg, "agent.grad-clip", "none")
    C.set_override(cfg, "agent.max_q_value", "100")
    C.set_override(cfg, "eval.final", "false")
    C.set_override(cfg, "total-steps", "1e6")
    C.set_override(cfg, "env.name", "metaworld")
    C.set_override(cfg, "env.tasks", "reach-v3,push-v3")
    assert cfg.agent.batch_size == 640
    assert cfg.agent.actor_hidden == [256, 256, 256]
    assert cfg.agent.grad_clip is None
    assert cfg.agent.sac.max_q_value == 100.0
    assert cfg.eval.final is False
    assert cfg.total_steps == 1_000_000
    assert cfg.env.tasks == ["reach-v3", "push-v3"]
    C.validate(cfg)


def test_override_errors():
    cfg = get_preset("mt10-mtsac")
    with pytest.raises(ConfigError, match=re.escape("unknown config field 'agent.lrr'")):
        C.set_override(cfg, "agent.lrr", "1")
    with pytest.raises(ConfigError, match=re.escape("agent.batch_size='12.5' is not an integer")):
        C.set_override(cfg, "agent.batch_size", "12.5")
    with pytest.raises(ConfigError, match=re.escape("eval.final='maybe' is not true/false")):
        C.set_override(cfg, "eval.final", "maybe")


def test_yaml_with_unknown_or_mistyped_fields_is_rejected():
    text = C.dump_yaml(get_preset("toy-mtsac")).replace("batch_size:", "batch_sise:")
    with pytest.raises(ConfigError, match=re.escape("agent.batch_sise")):
        C.load_yaml(text)
    text = C.dump_yaml(get_preset("toy-mtsac")).replace("seed: 0", "seed: zero")
    with pytest.raises(ConfigError, match="seed"):
        C.load_yaml(text)


def test_every_preset_has_a_one_line_description():
    """`mtrl presets` lists each preset with its description; none may be blank."""
    from mtrl.presets import DESCRIPTIONS, PRESETS

    missing = [name for name in PRESETS if not DESCRIPTIONS.get(name, "").strip()]
    assert not missing, f"presets without a description: {missing}"
    assert set(DESCRIPTIONS) <= set(PRESETS), set(DESCRIPTIONS) - set(PRESETS)
    assert all("\n" not in d and len(d) <= 100 for d in DESCRIPTIONS.values())
