"""The built-in agents, registered by name (:data:`mtrl.registry.AGENTS`): how each is built
from its config, its option checks, and its data path.

=============  ==========================================  ==================  ===========
name           agent                                       data path           sections
=============  ==========================================  ==================  ===========
mtsac          :class:`~mtrl.agents.sac.MTSAC`             replay + warm-up    sac
distral-sac    MTSAC with Distral's π0                     replay + warm-up    sac, distral
mta2c          :class:`~mtrl.agents.a2c.MTA2C`             rollouts            a2c
distral-a2c    MTA2C with Distral's π0                     rollouts            a2c, distral
mtppo          :class:`~mtrl.agents.ppo.MTPPO`             rollouts            ppo
distill        :class:`~mtrl.agents.distill.Distiller`     states + teachers   distill
=============  ==========================================  ==================  ===========
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mtrl.agents.a2c import A2CHyperparams, build_mta2c
from mtrl.agents.base import DataPath, EnvSpec, Reference
from mtrl.agents.distill import (
    DISTILL_LOSSES,
    DistillBehaviour,
    DistillHyperparams,
    TeacherActor,
    build_distiller,
)
from mtrl.agents.distral import DistralHyperparams
from mtrl.agents.offpolicy import ReplayDataPath, UniformWarmup, store_states, store_transitions
from mtrl.agents.onpolicy import RolloutDataPath
from mtrl.agents.ppo import PPOHyperparams, build_mtppo
from mtrl.agents.sac import SACHyperparams, build_mtsac
from mtrl.collect.base import Transitions
from mtrl.config import (
    AgentConfig,
    TrainConfig,
    check_positive,
    check_sizes,
    check_stratified_batch,
    choice_message,
    env_info,
)
from mtrl.errors import ConfigError
from mtrl.optim.combiners import make_combiner
from mtrl.registry import COMBINERS, register_agent

DISTILL_DATA = ("teacher", "student", "mix")
OPTIMIZERS = ("rmsprop", "rmsprop-tf", "adam")


# ----------------------------------------------------------------------------------------------
# Option checks


def _check_sac(cfg: TrainConfig, num_tasks: int) -> None:
    a, s = cfg.agent, cfg.agent.sac
    check_sizes("agent.actor_hidden", a.actor_hidden, allow_empty=False)
    check_sizes("agent.critic_hidden", a.critic_hidden, allow_empty=False)
    check_stratified_batch(cfg, num_tasks)
    for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
        check_positive(f"agent.sac.{name}", getattr(s, name))
    if not 0.0 < s.tau <= 1.0:
        raise ConfigError(f"agent.sac.tau={s.tau!r} must be in (0, 1]")
    if s.log_std_min >= s.log_std_max:
        raise ConfigError(f"agent.sac.log_std_min={s.log_std_min} must be < "
                          f"agent.sac.log_std_max={s.log_std_max}")
    if s.max_q_value is not None:
        check_positive("agent.sac.max_q_value", s.max_q_value)
    if not 0.0 <= s.log_prob_guard < 1.0:
        raise ConfigError(f"agent.sac.log_prob_guard={s.log_prob_guard!r} must be in [0, 1) "
                          "(0: the exact tanh correction; stable-baselines3 uses 1e-6)")
    _check_critics(cfg)
    _check_fused_critics(cfg)
    if COMBINERS.get(a.actor_combiner, "agent.actor_combiner").get("balances_losses"):
        raise ConfigError(
            f"agent.actor_combiner={a.actor_combiner!r} weights tasks by their loss values, "
            "which needs non-negative losses; the SAC actor loss α·log π − Q can be negative. "
            "Allowed for the actor: mean, pcgrad (use it as agent.critic_combiner)"
        )


CRITIC_LOSSES = ("mse", "categorical")


def _check_critics(cfg: TrainConfig) -> None:
    """The critic ensemble and the categorical critic's options (agent.sac.*)."""
    from mtrl.agents.sac import CRITIC_REDUCTIONS
    from mtrl.config import SACConfig

    a, s = cfg.agent, cfg.agent.sac
    if isinstance(s.num_critics, bool) or not isinstance(s.num_critics, int) or s.num_critics < 2:
        raise ConfigError(f"agent.sac.num_critics={s.num_critics!r} must be an integer >= 2")
    if s.critic_reduce is not None and s.critic_reduce not in CRITIC_REDUCTIONS:
        raise ConfigError(choice_message("agent.sac.critic_reduce", s.critic_reduce,
                                         ("null", *CRITIC_REDUCTIONS)))
    if s.critic_loss not in CRITIC_LOSSES:
        raise ConfigError(choice_message("agent.sac.critic_loss", s.critic_loss, CRITIC_LOSSES))
    if s.critic_loss == "mse":
        defaults = SACConfig()
        for name in ("num_atoms", "v_min", "v_max", "reward_normalization"):
            if getattr(s, name) != getattr(defaults, name):
                raise ConfigError(f"agent.sac.{name}={getattr(s, name)!r} is only used with "
                                  "agent.sac.critic_loss='categorical'; leave it at "
                                  f"{getattr(defaults, name)!r} for the mse critic")
        return
    if isinstance(s.num_atoms, bool) or not isinstance(s.num_atoms, int) or s.num_atoms < 2:
        raise ConfigError(f"agent.sac.num_atoms={s.num_atoms!r} must be an integer >= 2")
    if not s.v_min < s.v_max:
        raise ConfigError(f"agent.sac.v_min={s.v_min} must be < agent.sac.v_max={s.v_max}")
    if a.popart:
        raise ConfigError("agent.popart=true does not compose with agent.sac.critic_loss="
                          "'categorical' (a fixed support cannot be rescaled like PopArt's "
                          "heads); use agent.sac.reward_normalization=true to fit the returns "
                          "into the support instead")
    if s.max_q_value is not None:
        raise ConfigError(f"agent.sac.max_q_value={s.max_q_value} clips squared-error targets; "
                          "the categorical critic is bounded by [agent.sac.v_min, "
                          "agent.sac.v_max]: set max_q_value to null")
    if s.reward_normalization and not s.v_min < 0.0 < s.v_max:
        raise ConfigError(f"agent.sac.reward_normalization scales returns into "
                          f"[-b, b], b = min(-v_min, v_max), which needs v_min < 0 < v_max; "
                          f"got agent.sac.v_min={s.v_min}, agent.sac.v_max={s.v_max}")


def _check_fused_critics(cfg: TrainConfig) -> None:
    """agent.sac.fused_critics: a choice; ``on`` only for critics that can be fused."""
    from mtrl.config import FUSED_CRITICS

    a, choice = cfg.agent, cfg.agent.sac.fused_critics
    if choice not in FUSED_CRITICS:
        raise ConfigError(choice_message("agent.sac.fused_critics", choice, FUSED_CRITICS))
    if choice != "on":
        return
    lead = "agent.sac.fused_critics='on' stacks plain MLP critics into one ensemble"
    if a.critic_arch != "mlp":
        raise ConfigError(f"{lead}; agent.critic_arch={a.critic_arch!r} is not 'mlp': use "
                          "agent.sac.fused_critics=auto or off")
    if a.arch.task_encoder != "one-hot":
        raise ConfigError(f"{lead} on a one-hot task input; agent.arch.task_encoder="
                          f"{a.arch.task_encoder!r}: use agent.sac.fused_critics=auto or off")
    if a.popart:
        raise ConfigError(f"{lead} without PopArt heads; agent.popart=true: use "
                          "agent.sac.fused_critics=auto or off")


def _check_distral(cfg: TrainConfig) -> None:
    a, d = cfg.agent, cfg.agent.distral
    if not 0.0 <= d.alpha <= 1.0:
        raise ConfigError(f"agent.distral.alpha={d.alpha!r} must be in [0, 1] "
                          "(1: KL-only Distral)")
    check_positive("agent.distral.beta", d.beta)
    if d.columns not in (1, 2):
        raise ConfigError(choice_message("agent.distral.columns", d.columns, (1, 2)))
    if d.columns == 2 and (a.name != "distral-a2c" or not env_info(cfg.env)["discrete"]):
        raise ConfigError(
            "agent.distral.columns=2 (task logits α·h + β·f_i) is defined for discrete "
            "actions: it needs agent.name='distral-a2c' and a discrete env, not "
            f"agent.name={a.name!r} on env.name={cfg.env.name!r}; allowed here: 1"
        )
    if d.pi0_hidden is not None:
        check_sizes("agent.distral.pi0_hidden", d.pi0_hidden)


def _check_torso(cfg: TrainConfig) -> None:
    from mtrl.modules.cnn import TORSOS

    a = cfg.agent
    if a.torso not in TORSOS:
        raise ConfigError(choice_message("agent.torso", a.torso, TORSOS))
    if a.torso == "nature-cnn" and not env_info(cfg.env)["image"]:
        raise ConfigError(
            f"agent.torso='nature-cnn' needs image observations, but env.name={cfg.env.name!r} "
            "has flat vectors; allowed here: auto, none"
        )


def _check_joint_loss(cfg: TrainConfig) -> None:
    a = cfg.agent
    if a.critic_combiner != "mean":
        raise ConfigError(
            f"agent.critic_combiner={a.critic_combiner!r}: {a.name} has one joint actor-critic "
            "loss, combined by agent.actor_combiner; leave agent.critic_combiner='mean'"
        )


def _check_a2c(cfg: TrainConfig, num_tasks: int) -> None:
    c = cfg.agent.a2c
    check_positive("agent.a2c.n_steps", c.n_steps)
    if not 0.0 <= c.gae_lambda <= 1.0:
        raise ConfigError(f"agent.a2c.gae_lambda={c.gae_lambda!r} must be in [0, 1]")
    check_positive("agent.a2c.ent_coef", c.ent_coef, allow_zero=True)
    check_positive("agent.a2c.vf_coef", c.vf_coef)
    check_positive("agent.a2c.lr", c.lr)
    check_positive("agent.a2c.optim_eps", c.optim_eps)
    if c.optimizer not in OPTIMIZERS:
        raise ConfigError(choice_message("agent.a2c.optimizer", c.optimizer, OPTIMIZERS))
    if not 0.0 < c.rmsprop_alpha < 1.0:
        raise ConfigError(f"agent.a2c.rmsprop_alpha={c.rmsprop_alpha!r} must be in (0, 1)")
    _check_torso(cfg)
    _check_joint_loss(cfg)


def _check_ppo(cfg: TrainConfig, num_tasks: int) -> None:
    c = cfg.agent.ppo
    for name in ("n_steps", "epochs", "minibatches", "clip_range", "lr", "optim_eps"):
        check_positive(f"agent.ppo.{name}", getattr(c, name))
    if not 0.0 <= c.gae_lambda <= 1.0:
        raise ConfigError(f"agent.ppo.gae_lambda={c.gae_lambda!r} must be in [0, 1]")
    check_positive("agent.ppo.ent_coef", c.ent_coef, allow_zero=True)
    check_positive("agent.ppo.vf_coef", c.vf_coef)
    if c.clip_value is not None:
        check_positive("agent.ppo.clip_value", c.clip_value)
    if c.target_kl is not None:
        check_positive("agent.ppo.target_kl", c.target_kl)
    rows = c.n_steps * cfg.env.envs_per_task  # rollout rows per task
    if c.minibatches > rows:
        raise ConfigError(
            f"agent.ppo.minibatches={c.minibatches} is more than each task's rollout rows "
            f"(agent.ppo.n_steps × env.envs_per_task = {rows})"
        )
    _check_torso(cfg)
    _check_joint_loss(cfg)


def _check_distill(cfg: TrainConfig, num_tasks: int) -> None:
    from mtrl.teachers import parse_teacher_specs

    a, d = cfg.agent, cfg.agent.distill
    if d.loss not in DISTILL_LOSSES:
        raise ConfigError(choice_message("agent.distill.loss", d.loss, DISTILL_LOSSES))
    if d.data not in DISTILL_DATA:
        raise ConfigError(choice_message("agent.distill.data", d.data, DISTILL_DATA))
    if not 0.0 <= d.teacher_prob <= 1.0:
        raise ConfigError(f"agent.distill.teacher_prob={d.teacher_prob!r} must be in [0, 1]")
    if d.temperature is not None:
        check_positive("agent.distill.temperature", d.temperature)
    check_positive("agent.distill.feature_coef", d.feature_coef, allow_zero=True)
    check_positive("agent.distill.lr", d.lr)
    if not a.actor_hidden:
        raise ConfigError("agent.actor_hidden=[] : the distillation student needs at least one "
                          "hidden layer (its features)")
    if a.actor_combiner != "mean" or a.critic_combiner != "mean":
        raise ConfigError("agent.name='distill' averages its per-task losses; leave "
                          "agent.actor_combiner and agent.critic_combiner at 'mean'")
    check_stratified_batch(cfg, num_tasks)
    _check_torso(cfg)
    from mtrl.config import task_names

    parse_teacher_specs(list(d.teachers), task_names(cfg.env))


# ----------------------------------------------------------------------------------------------
# Builders


def _distral(cfg: AgentConfig) -> DistralHyperparams | None:
    if not cfg.name.startswith("distral"):
        return None
    d = cfg.distral
    return DistralHyperparams(alpha=d.alpha, beta=d.beta, columns=d.columns)


def _action_spec(action_space: gym.Space[Any], agent: str) -> tuple[int | None, int | None]:
    """``(num_actions, None)`` for Discrete, ``(None, action_dim)`` for Box actions."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n), None
    if isinstance(action_space, gym.spaces.Box):
        return None, int(np.prod(action_space.shape))
    raise ValueError(f"{agent} supports Discrete and Box actions, not {action_space}")


def build_sac(cfg: AgentConfig, *, obs_space: gym.Space[Any], action_space: gym.Space[Any],
              num_tasks: int, device: torch.device) -> Any:
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"{cfg.name} needs continuous (Box) actions, the env has {action_space}")
    obs_dim = int(np.prod(obs_space.shape or ()))
    action_dim = int(np.prod(action_space.shape))
    s = cfg.sac
    target_entropy = -float(action_dim) if s.target_entropy is None else s.target_entropy
    return build_mtsac(
        obs_dim=obs_dim, action_dim=action_dim, num_tasks=num_tasks,
        actor_hidden=list(cfg.actor_hidden), critic_hidden=list(cfg.critic_hidden),
        actor_lr=s.actor_lr, critic_lr=s.critic_lr, alpha_lr=s.alpha_lr,
        init_alpha=s.init_alpha,
        hparams=SACHyperparams(gamma=cfg.gamma, tau=s.tau, target_entropy=target_entropy,
                               grad_clip=cfg.grad_clip, max_q_value=s.max_q_value,
                               popart_actor_scale=s.popart_actor_scale,
                               critic_reduce=_critic_reduce(s)),
        actor_combiner=make_combiner(cfg.actor_combiner, cfg.combiner),
        critic_combiner=make_combiner(cfg.critic_combiner, cfg.combiner),
        log_std_min=s.log_std_min, log_std_max=s.log_std_max, log_prob_guard=s.log_prob_guard,
        popart=bool(cfg.popart), popart_beta=cfg.popart_beta,
        actor_arch=cfg.actor_arch, critic_arch=cfg.critic_arch, arch_cfg=cfg.arch,
        distral=_distral(cfg), pi0_hidden=cfg.distral.pi0_hidden,
        pi0_task_input=cfg.distral.pi0_task_input, tune_entropy=cfg.distral.tune_entropy,
        num_critics=s.num_critics,
        num_atoms=s.num_atoms if s.critic_loss == "categorical" else None,
        v_min=s.v_min, v_max=s.v_max, reward_normalization=s.reward_normalization,
        fused_critics=_fused_critics(cfg, device), compile_mode=cfg.compile, device=device,
    )


def _fused_critics(cfg: AgentConfig, device: torch.device) -> bool:
    """agent.sac.fused_critics resolved: ``auto`` fuses plain MLP critics on CUDA only (on CPU
    separate networks measured faster, :class:`~mtrl.modules.policies.TwinQCritic`)."""
    from mtrl.modules.policies import fused_critic_blocker

    choice = cfg.sac.fused_critics
    if choice == "off":
        return False
    fusable = fused_critic_blocker(cfg.critic_arch, cfg.arch.task_encoder,
                                   bool(cfg.popart)) is None
    return fusable and (choice == "on" or device.type == "cuda")


def _critic_reduce(s: Any) -> str:
    """agent.sac.critic_reduce, or its default: min for the mse critic, mean (BRC) for the
    categorical one."""
    if s.critic_reduce is not None:
        return str(s.critic_reduce)
    return "mean" if s.critic_loss == "categorical" else "min"


def _actor_critic_args(cfg: AgentConfig, obs_space: gym.Space[Any],
                       action_space: gym.Space[Any], num_tasks: int) -> dict[str, Any]:
    """The network, PopArt and combiner arguments ``build_mta2c`` and ``build_mtppo`` share
    (PopArt on unless the config turns it off)."""
    num_actions, action_dim = _action_spec(action_space, cfg.name)
    return {
        "obs_shape": tuple(obs_space.shape or ()), "num_tasks": num_tasks,
        "num_actions": num_actions, "action_dim": action_dim,
        "actor_hidden": list(cfg.actor_hidden), "critic_hidden": list(cfg.critic_hidden),
        "actor_arch": cfg.actor_arch, "critic_arch": cfg.critic_arch, "arch_cfg": cfg.arch,
        "torso": cfg.torso, "popart": True if cfg.popart is None else cfg.popart,
        "popart_beta": cfg.popart_beta,
        "combiner": make_combiner(cfg.actor_combiner, cfg.combiner),
    }


def build_a2c(cfg: AgentConfig, *, obs_space: gym.Space[Any], action_space: gym.Space[Any],
              num_tasks: int, device: torch.device) -> Any:
    c = cfg.a2c
    return build_mta2c(
        **_actor_critic_args(cfg, obs_space, action_space, num_tasks),
        lr=c.lr, optimizer=c.optimizer, optim_eps=c.optim_eps, rmsprop_alpha=c.rmsprop_alpha,
        hparams=A2CHyperparams(gamma=cfg.gamma, gae_lambda=c.gae_lambda, ent_coef=c.ent_coef,
                               vf_coef=c.vf_coef, grad_clip=cfg.grad_clip),
        distral=_distral(cfg), pi0_hidden=cfg.distral.pi0_hidden,
        pi0_task_input=cfg.distral.pi0_task_input, compile_mode=cfg.compile, device=device,
    )


def build_ppo(cfg: AgentConfig, *, obs_space: gym.Space[Any], action_space: gym.Space[Any],
              num_tasks: int, device: torch.device) -> Any:
    c = cfg.ppo
    return build_mtppo(
        **_actor_critic_args(cfg, obs_space, action_space, num_tasks),
        lr=c.lr, optim_eps=c.optim_eps,
        hparams=PPOHyperparams(
            gamma=cfg.gamma, gae_lambda=c.gae_lambda, clip_range=c.clip_range,
            clip_value=c.clip_value, ent_coef=c.ent_coef, vf_coef=c.vf_coef, epochs=c.epochs,
            minibatches=c.minibatches, normalize_advantage=c.normalize_advantage,
            target_kl=c.target_kl, grad_clip=cfg.grad_clip),
        compile_mode=cfg.compile, device=device,
    )


def build_student(cfg: AgentConfig, *, obs_space: gym.Space[Any], action_space: gym.Space[Any],
                  num_tasks: int, device: torch.device) -> Any:
    """The student of a distillation run (teachers are attached by its data path: evaluation
    needs only the student)."""
    num_actions, action_dim = _action_spec(action_space, cfg.name)
    d = cfg.distill
    return build_distiller(
        obs_shape=tuple(obs_space.shape or ()), num_tasks=num_tasks, num_actions=num_actions,
        action_dim=action_dim, hidden=list(cfg.actor_hidden), arch=cfg.actor_arch,
        arch_cfg=cfg.arch, torso=cfg.torso, squash=d.squash, lr=d.lr,
        hparams=DistillHyperparams(loss=d.loss, temperature=d.temperature,
                                   feature_coef=d.feature_coef, grad_clip=cfg.grad_clip),
        device=device,
    )


# ----------------------------------------------------------------------------------------------
# Data paths


def _replay_common(cfg: TrainConfig, env: EnvSpec) -> dict[str, Any]:
    from mtrl.seeding import derive_seed

    return {"num_envs": env.num_envs, "warmup_steps": cfg.warmup_steps,
            "updates_per_step": cfg.updates_per_step, "collect_steps": cfg.collect_steps,
            "per_task": cfg.agent.batch_size // env.num_tasks,
            "rng": np.random.default_rng(derive_seed(cfg.seed, "warmup")),
            "save_with_checkpoint": cfg.replay.save_with_checkpoint}


def replay_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device) -> DataPath:
    from mtrl.data.replay import MultiTaskReplayBuffer
    from mtrl.seeding import derive_seed

    common = _replay_common(cfg, env)
    buffer = MultiTaskReplayBuffer(env.num_tasks, cfg.replay.capacity, env.obs_shape,
                                   env.action_dim, device=device,
                                   seed=derive_seed(cfg.seed, "replay"))
    store = store_transitions(buffer)
    if getattr(agent, "reward_scaler", None) is not None:
        # BRC's reward normalization learns each task's return bound from the collected
        # episodes (mtrl.agents.reward_scaling).
        store_in_buffer = store

        def store(tr: Transitions) -> None:
            store_in_buffer(tr)
            agent.observe(tr.reward, tr.terminated, tr.truncated, tr.task_id)

    return ReplayDataPath(agent, buffer, UniformWarmup(agent, common["rng"], env.action_dim),
                          store, **common)


def _rollout_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device,
                  n_steps: int, gae_lambda: float) -> DataPath:
    from mtrl.data.rollout import RolloutStorage

    storage = RolloutStorage(
        n_steps, env.task_ids, env.obs_shape, obs_dtype=env.obs_dtype,
        action_shape=() if env.discrete else (env.action_dim,), discrete=env.discrete,
        device=device,
    )
    return RolloutDataPath(agent, storage, gamma=cfg.agent.gamma, gae_lambda=gae_lambda)


def a2c_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device) -> DataPath:
    c = cfg.agent.a2c
    return _rollout_path(agent, cfg, env, device, c.n_steps, c.gae_lambda)


def ppo_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device) -> DataPath:
    c = cfg.agent.ppo
    return _rollout_path(agent, cfg, env, device, c.n_steps, c.gae_lambda)


def distill_preflight(cfg: TrainConfig, task_names: list[str]) -> dict[str, str]:
    """Every teacher path exists (checked before any env is built); ``{task: path}``."""
    from pathlib import Path

    from mtrl.teachers import parse_teacher_specs

    specs = parse_teacher_specs(list(cfg.agent.distill.teachers), task_names)
    for t, p in specs.items():
        if not Path(p).exists():
            hint = ""
            if cfg.preset == "toy-distill":
                hint = ("; train SB3 teachers for it with `python experiments/"
                        "train_sb3_teachers.py --discrete --num-tasks "
                        f"{len(task_names)} --out runs/toy-teachers`")
            raise ConfigError(f"agent.distill.teachers: the teacher of task {t!r}, {p}, does "
                              f"not exist{hint}")
    return specs


def distill_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device
                 ) -> DataPath:
    from mtrl.data.states import StateBuffer
    from mtrl.seeding import derive_seed
    from mtrl.teachers import load_teacher

    specs = distill_preflight(cfg, env.task_names)
    try:
        agent.set_teachers([
            load_teacher(specs[t], t, obs_space=env.obs_space, action_space=env.action_space,
                         device=device, action_map=env.teacher_action_maps.get(t))
            for t in env.task_names
        ])
    except (ValueError, ImportError) as e:
        raise ConfigError(f"agent.distill.teachers: {e}") from e
    common = _replay_common(cfg, env)
    states = StateBuffer(env.num_tasks, cfg.replay.capacity, env.obs_shape,
                         obs_dtype=env.obs_dtype, device=device,
                         seed=derive_seed(cfg.seed, "replay"))
    d = cfg.agent.distill
    behaviour = DistillBehaviour(agent, common["rng"], d.data, d.teacher_prob)
    refs = {"teacher": Reference(TeacherActor(agent), {"teachers": specs})}
    return ReplayDataPath(agent, states, behaviour, store_states(states), references=refs,
                          **common)


# ----------------------------------------------------------------------------------------------
# Registration

def _check_distral_sac(cfg: TrainConfig, num_tasks: int) -> None:
    _check_sac(cfg, num_tasks)
    _check_distral(cfg)


def _check_distral_a2c(cfg: TrainConfig, num_tasks: int) -> None:
    _check_a2c(cfg, num_tasks)
    _check_distral(cfg)


register_agent("mtsac", build_sac, data_path=replay_path, check=_check_sac,
               continuous_only=True, sections=("sac",), compiles=True)
register_agent("distral-sac", build_sac, data_path=replay_path,
               check=_check_distral_sac,
               continuous_only=True, sections=("sac", "distral"), compiles=True)
register_agent("mta2c", build_a2c, data_path=a2c_path, check=_check_a2c, on_policy=True,
               sections=("a2c",), compiles=True)
register_agent("distral-a2c", build_a2c, data_path=a2c_path,
               check=_check_distral_a2c,
               on_policy=True, sections=("a2c", "distral"), compiles=True)
register_agent("mtppo", build_ppo, data_path=ppo_path, check=_check_ppo, on_policy=True,
               sections=("ppo",), compiles=True)
register_agent("distill", build_student, data_path=distill_path, check=_check_distill,
               preflight=distill_preflight, sections=("distill",))
