"""Typed experiment configuration.

Every knob of a run lives in one :class:`TrainConfig`. Configs are plain dataclasses so that
they serialize to ``config.yaml`` and back, can be overridden field by field from the command
line (``--agent.batch-size 640``) and are validated *before* any environment is built:
:func:`validate` raises :class:`ConfigError` with a message naming the field, the value and what
is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

ENV_NAMES = ("mt10", "mt25", "mt50", "metaworld", "toy-reach", "toy-reach-discrete", "atari")
AGENT_NAMES = ("mtsac", "mta2c", "distral-sac", "distral-a2c", "distill")
# Agents that learn from their own fresh rollouts (no replay, no warm-up).
ON_POLICY_AGENTS = ("mta2c", "distral-a2c")
# Agents built on SAC (continuous actions only) / with a Distral distilled policy π0.
SAC_AGENTS = ("mtsac", "distral-sac")
DISTRAL_AGENTS = ("distral-sac", "distral-a2c")
DISTILL_LOSSES = ("kl", "mse")
DISTILL_DATA = ("teacher", "student", "mix")
OPTIMIZER_NAMES = ("rmsprop", "rmsprop-tf", "adam")
TORSO_NAMES = ("auto", "nature-cnn", "none")
ARCH_NAMES = ("mlp", "multihead", "separate", "soft-modular", "routing", "moe")
ROUTER_MODES = ("reinforce", "gumbel")
TASK_ENCODER_NAMES = ("one-hot", "embedding")
GATING_NAMES = ("care", "mmoe")
COMBINER_NAMES = ("mean", "pcgrad", "gradnorm", "uncertainty", "dwa")
# Combiners that reweight losses by their values: defined only for non-negative losses.
LOSS_BALANCING_COMBINERS = ("gradnorm", "uncertainty", "dwa")
DEVICES = ("auto", "cpu", "cuda")
VECTOR_STRATEGIES = ("sync", "async")
# Envs with discrete actions / image observations (known without building them).
DISCRETE_ENVS = ("toy-reach-discrete", "atari")
IMAGE_ENVS = ("atari",)


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values."""


@dataclass
class EnvConfig:
    name: str = "mt10"
    """mt10 | mt25 | mt50 | metaworld (custom task list) | toy-reach | toy-reach-discrete |
    atari (the games listed in tasks)."""
    tasks: list[str] = field(default_factory=list)
    """Meta-World v3 task names for name=metaworld (e.g. [reach-v3, push-v3]); Atari game names
    for name=atari, one task per game (e.g. [Pong, Breakout]; mtrl.envs.atari.ATARI6 and
    ATARI57 are the standard sets); empty otherwise."""
    num_tasks: int = 4
    """Number of goals/tasks of the toy envs (ignored by Meta-World)."""
    envs_per_task: int = 1
    """Parallel envs per task (Meta-World: exactly one env per task)."""
    vector_strategy: str = "sync"
    """sync | async vectorization of Meta-World (async uses one process per env)."""
    max_episode_steps: int = 50
    """Episode length of the toy envs. Meta-World episodes are always 500 steps."""
    reward_scales: list[float] = field(default_factory=list)
    """Multiply task k's rewards by reward_scales[k] (one positive number per task), e.g. to
    test PopArt on tasks whose rewards differ by orders of magnitude; empty: unscaled."""
    # ---- atari (ignored by the other envs, which require the defaults) ----------------------
    clip_rewards: bool = False
    """Atari: train on the sign of each reward (-1, 0, +1; Mnih et al. 2015). Episode returns,
    evaluation and human-normalized scores always use the unclipped game score."""
    sticky_actions: float = 0.25
    """Atari: probability that the emulator repeats the previous action (Machado et al. 2018)."""
    noop_max: int = 30
    """Atari: episodes start after a random number (up to noop_max) of no-op actions."""
    frame_skip: int = 4
    """Atari: emulator frames per agent step (observation: max over the last two frames)."""
    frame_stack: int = 4
    """Atari: number of stacked 84x84 grayscale frames in an observation."""
    max_episode_frames: int = 108_000
    """Atari: episodes truncate after this many emulator frames (108000 = 30 minutes of play)."""
    num_threads: int = 0
    """Atari: emulator worker threads in total, shared by the games (0: one per CPU core)."""


@dataclass
class CombinerConfig:
    """Options of the gradient combiners (``agent.actor_combiner`` / ``agent.critic_combiner``)."""

    diagnostics_every: int = 1000
    """Every this many updates, compute the per-task gradient cosine matrix and the fraction of
    conflicting task pairs (TensorBoard ``grad/...``), for any combiner; 0 disables."""
    gradnorm_alpha: float = 1.5
    """GradNorm's asymmetry α (Chen et al. 2018 use 1.5 on NYUv2)."""
    weight_lr: float = 1e-3
    """Adam learning rate of the learned loss weights (GradNorm, uncertainty weighting)."""
    dwa_temperature: float = 2.0
    """Dynamic Weight Averaging temperature (Liu et al. 2019 use 2)."""
    dwa_window: int = 1000
    """Updates per DWA "epoch": weights follow the ratio of the last two windows' mean losses."""


@dataclass
class ArchConfig:
    """Sizes of the task-conditioned architectures (``agent.actor_arch`` / ``critic_arch``).
    ``mlp`` and ``multihead`` take their hidden sizes from ``agent.actor_hidden`` /
    ``agent.critic_hidden``; ``moe`` uses them for its head MLP."""

    task_encoder: str = "one-hot"
    """one-hot | embedding: how mlp, multihead and moe see the task id."""
    task_embedding_dim: int = 64
    """Size of the learned task embedding (task_encoder=embedding)."""
    num_layers: int = 2
    """soft-modular: layers L of the base network (paper: 2 on MT10, 4 on MT50)."""
    num_modules: int = 2
    """soft-modular: modules m per layer (paper: 2 on MT10, 4 on MT50)."""
    module_dim: int = 256
    """soft-modular: units d of each module."""
    embedding_dim: int = 400
    """soft-modular: size D of the observation and task embeddings."""
    routing_dim: int = 256
    """soft-modular: hidden size of the observation-embedding MLP f(s)."""
    num_experts: int = 4
    """moe: number of shared expert encoders k."""
    expert_hidden: list[int] = field(default_factory=lambda: [400, 400])
    """moe: hidden sizes of each expert encoder (the last one is the representation size)."""
    gating: str = "care"
    """moe: care (task context attends over experts) | mmoe (one input-dependent gate per task)."""
    router_mode: str = "reinforce"
    """routing: reinforce (router trained by policy gradient on −loss, the paper) | gumbel
    (straight-through Gumbel-softmax relaxation)."""
    router_depth: int = 3
    """routing: number of routed depths."""
    router_modules: int = 4
    """routing: modules per depth (each module_dim units)."""
    router_pass: bool = True
    """routing: offer PASS (identity) as a choice at every depth."""
    router_temperature: float = 1.0
    """routing: Gumbel-softmax temperature (router_mode=gumbel)."""
    router_diversity: float = 0.0
    """routing: weight of the router-entropy bonus against module collapse (0: off)."""
    router_task_input: bool = True
    """routing: the input layer also sees the one-hot task (false: only the routers do, as in
    Rosenbaum et al.)."""


@dataclass
class AgentConfig:
    """Agent hyperparameters. ``name``: mtsac (multi-task SAC, off-policy, continuous actions),
    mta2c (multi-task A2C, on-policy, discrete or continuous actions), distral-sac or
    distral-a2c (Distral on either; fields ``distral_*``), distill (policy distillation of
    per-task teachers into one student; fields ``distill_*``, the student is built from
    actor_hidden / actor_arch / torso and trained with Adam at ``lr``). The MT-SAC defaults
    follow the Meta-World+ MTSAC baseline (McLean et al. 2025, metaworld-algorithms): 400-400
    MLPs, batch 1280, lr 3e-4, gamma 0.99, tau 0.005, initial temperature 1.0, target entropy
    -|A|. The MT-A2C fields are at the end (``n_steps`` …); the A2C presets set the hidden
    sizes, ``grad_clip`` and the combiner for it."""

    name: str = "mtsac"
    actor_hidden: list[int] = field(default_factory=lambda: [400, 400])
    critic_hidden: list[int] = field(default_factory=lambda: [400, 400])
    batch_size: int = 1280
    """Total batch, stratified equally over tasks: must be a multiple of the number of tasks."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy: float | None = None
    """Entropy target per task; None means -action_dim (continuous) as in Haarnoja et al. 2018."""
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    grad_clip: float | None = None
    """Clip each network's global gradient norm to this value; None disables clipping."""
    max_q_value: float | None = None
    """Clip Q targets and predictions to [-v, v] (Meta-World+ uses 5000); None disables."""
    popart: bool | None = None
    """PopArt-normalized values (per-task value heads and statistics; Hessel et al. 2019).
    None: the agent's default, on for mta2c (as in Hessel et al.), off for mtsac."""
    popart_beta: float = 3e-4
    """Step size β of PopArt's running moments (Hessel et al. 2019 use 3e-4)."""
    popart_actor_scale: bool = True
    """With PopArt, divide each task's actor loss by its σ (scale-invariant actor gradients)."""
    actor_combiner: str = "mean"
    """How the per-task actor losses become one update: mean | pcgrad (loss-balancing
    combiners need non-negative losses and are not allowed for the SAC actor). mta2c: the
    combiner of its joint actor-critic loss."""
    critic_combiner: str = "mean"
    """mean | pcgrad | gradnorm | uncertainty | dwa."""
    combiner: CombinerConfig = field(default_factory=CombinerConfig)
    actor_arch: str = "mlp"
    """mlp | multihead | separate (one MLP per task) | soft-modular | routing | moe (sizes in
    agent.arch)."""
    critic_arch: str = "mlp"
    """mlp | multihead | separate | soft-modular | routing | moe (sizes in agent.arch)."""
    arch: ArchConfig = field(default_factory=ArchConfig)
    # ---- mta2c (on-policy) ------------------------------------------------------------------
    n_steps: int = 5
    """mta2c: env steps per env in each rollout (one update per rollout; A3C/SB3 use 5)."""
    gae_lambda: float = 1.0
    """mta2c: GAE λ (Schulman et al. 2016); 1.0 gives A3C's n-step returns."""
    ent_coef: float = 0.01
    """mta2c: weight of the entropy bonus."""
    vf_coef: float = 0.5
    """mta2c: weight of the squared value error (G − V)²."""
    lr: float = 7e-4
    """mta2c: learning rate of its single optimizer."""
    optimizer: str = "rmsprop"
    """mta2c: rmsprop (PyTorch's: mean square starts at 0) | rmsprop-tf (mean square starts at
    1, as TensorFlow's RMSProp of the original A3C/A2C code; the Atari presets) | adam."""
    optim_eps: float = 1e-5
    """mta2c: ε of RMSprop / Adam."""
    rmsprop_alpha: float = 0.99
    """mta2c: RMSprop smoothing constant α."""
    torso: str = "auto"
    """mta2c: auto (Nature CNN for image observations, none otherwise) | nature-cnn | none."""
    # ---- Distral (distral-sac, distral-a2c) -------------------------------------------------
    distral_alpha: float = 0.5
    """Distral α = c_KL/(c_KL + c_Ent) in [0, 1] (Teh et al. 2017, Eq. 2): 1 is the KL-only
    variant, < 1 adds an entropy bonus."""
    distral_beta: float = 100.0
    """Distral β = 1/(c_KL + c_Ent) > 0: the reward bonus is (α/β) log π0 − (1/β) log πi."""
    distral_columns: int = 1
    """1: task policies with their own networks (agent.actor_arch, e.g. separate); 2: task
    logits α·h + β·f_i on π0's logits h (discrete actions, distral-a2c)."""
    distral_pi0_hidden: list[int] | None = None
    """Hidden sizes of the distilled policy π0; None: agent.actor_hidden."""
    distral_pi0_task_input: bool = False
    """π0 sees the one-hot task id (False: a shared policy of the observation only, as in
    Distral)."""
    distral_tune_entropy: bool = True
    """distral-sac: c_Ent is each task's learned SAC temperature (target entropy) instead of the
    fixed (1 − α)/β; c_KL = α/β stays fixed."""
    # ---- policy distillation (distill) ------------------------------------------------------
    distill_teachers: list[str] = field(default_factory=list)
    """One teacher per task: ``task=path`` entries (a stable-baselines3 ``.zip`` or an mtrl run
    directory), and/or one bare ``path`` for every task not named: an mtrl run directory
    trained on those tasks (any superset), or a directory holding ``<task>.zip`` files or
    ``<task>/`` run directories."""
    distill_loss: str = "kl"
    """kl: KL(teacher ‖ student) (discrete: with temperature, Rusu et al. 2016 Eq. 3;
    continuous: closed-form Gaussian KL) | mse (Q-values/logits, or deterministic actions)."""
    distill_temperature: float | None = None
    """Temperature τ of the teacher's softmax; None: 1 for policy teachers, 0.01 for Q-value
    (DQN) teachers (Rusu et al. 2016)."""
    distill_feature_coef: float = 0.0
    """Weight of Actor-Mimic feature regression (Parisotto et al. 2016, Eq. 4); 0: off."""
    distill_data: str = "mix"
    """Who acts while collecting the states the teachers label: teacher | student (DAgger,
    Ross et al. 2011) | mix (each env step, the teacher with probability distill_teacher_prob)."""
    distill_teacher_prob: float = 0.5
    """distill_data=mix: probability that the teacher acts (per env and step)."""
    distill_squash: bool = True
    """Continuous students: tanh-squashed Gaussian (to match SAC teachers); false for
    unsquashed Gaussian teachers (PPO/A2C, mtrl's mta2c)."""


@dataclass
class ReplayConfig:
    capacity: int = 1_000_000
    """Total transitions, split equally into one ring per task."""
    save_with_checkpoint: bool = True
    """Store the buffer next to the latest checkpoint so that a resumed run keeps its data."""


@dataclass
class EvalConfig:
    every: int = 200_000
    """Evaluate every this many env steps (0: only at the end of training)."""
    episodes_per_task: int = 50
    """Meta-World protocol: 50 episodes per task, one per goal."""
    final: bool = True
    """Evaluate once more when training ends."""
    deterministic: bool = True
    """Act with the policy's mode (mean action / most likely action), the Meta-World protocol;
    false samples from the policy (common for Atari policy-gradient agents, whose greedy
    policies can get stuck)."""


@dataclass
class LogConfig:
    every: int = 5_000
    """Write losses and throughput to TensorBoard every this many env steps."""
    progress_bar: bool = True


@dataclass
class CheckpointConfig:
    every: int = 100_000
    """Save a checkpoint every this many env steps (0: only at the end and on Ctrl-C)."""
    keep_last: int = 3


@dataclass
class TrainConfig:
    preset: str = ""
    """Name of the preset this config came from (informational)."""
    seed: int = 0
    device: str = "auto"
    total_steps: int = 20_000_000
    """Environment steps summed over all envs (Meta-World+ convention)."""
    warmup_steps: int = 40_000
    """Env steps (summed over envs) of uniform random actions before the first update."""
    updates_per_step: int = 1
    """Gradient steps per vector-env step."""
    run_dir: str | None = None
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


# --------------------------------------------------------------------------------------------
# Task names (known without building any environment)


def metaworld_task_lists() -> dict[str, list[str]]:
    """The MT10/MT25/MT50 task names in Meta-World's own order, and all v3 tasks."""
    from metaworld import env_dict

    return {
        "mt10": list(env_dict.MT10_V3.keys()),
        "mt25": list(env_dict.MT25_V3.keys()),
        "mt50": list(env_dict.MT50_V3.keys()),
        "all": list(env_dict.ALL_V3_ENVIRONMENTS.keys()),
    }


def task_names(env: EnvConfig) -> list[str]:
    """Task names of an env config, in task-id order. Raises ConfigError on unknown names."""
    if env.name in ("mt10", "mt25", "mt50"):
        return metaworld_task_lists()[env.name]
    if env.name == "metaworld":
        return list(env.tasks)
    if env.name in ("toy-reach", "toy-reach-discrete"):
        return [f"goal-{k}" for k in range(env.num_tasks)]
    if env.name == "atari":
        return list(env.tasks)
    raise ConfigError(_choice_msg("env.name", env.name, ENV_NAMES))


# --------------------------------------------------------------------------------------------
# Validation


def _choice_msg(field_name: str, value: Any, allowed: typing.Iterable[Any]) -> str:
    return f"{field_name}={value!r} is not valid; allowed: {', '.join(map(str, allowed))}"


def _positive(path: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}={value!r} must be {bound}")


def validate(cfg: TrainConfig) -> None:
    """Check every field of ``cfg``; raise ConfigError naming the first bad field."""
    _validate_env(cfg.env)
    names = task_names(cfg.env)
    num_tasks = len(names)
    num_envs = num_tasks * cfg.env.envs_per_task
    if cfg.env.reward_scales:
        if len(cfg.env.reward_scales) != num_tasks:
            raise ConfigError(
                f"env.reward_scales has {len(cfg.env.reward_scales)} entries; it needs one per "
                f"task ({num_tasks}) or none"
            )
        if any(not s > 0 for s in cfg.env.reward_scales):
            raise ConfigError(f"env.reward_scales={cfg.env.reward_scales} must all be > 0")

    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} must be a non-negative integer")
    if cfg.device not in DEVICES:
        raise ConfigError(_choice_msg("device", cfg.device, DEVICES))
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device='cuda' but CUDA is not available to this torch "
                f"({torch.__version__}); allowed here: auto, cpu"
            )
    _positive("total_steps", cfg.total_steps)
    _positive("warmup_steps", cfg.warmup_steps, allow_zero=True)
    _positive("updates_per_step", cfg.updates_per_step)

    a = cfg.agent
    if a.name not in AGENT_NAMES:
        raise ConfigError(_choice_msg("agent.name", a.name, AGENT_NAMES))
    on_policy = a.name in ON_POLICY_AGENTS
    for path, sizes in (("agent.actor_hidden", a.actor_hidden),
                        ("agent.critic_hidden", a.critic_hidden)):
        if any((not isinstance(s, int)) or s <= 0 for s in sizes):
            raise ConfigError(f"{path}={sizes!r} must be a list of positive integers")
        if not sizes and not on_policy and a.name != "distill":
            raise ConfigError(f"{path}=[] : {a.name} needs at least one hidden layer")
    if on_policy:
        _validate_on_policy(cfg)
    _positive("agent.batch_size", a.batch_size)
    if not on_policy and a.batch_size % num_tasks != 0:
        lo = max(num_tasks, a.batch_size // num_tasks * num_tasks)
        raise ConfigError(
            f"agent.batch_size={a.batch_size} must be divisible by the number of tasks "
            f"({num_tasks} for env.name={cfg.env.name!r}) so that every task gets the same "
            f"number of samples; e.g. {lo} or {lo + num_tasks}"
        )
    for path in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
        _positive(f"agent.{path}", getattr(a, path))
    if not 0.0 <= a.gamma < 1.0:
        raise ConfigError(f"agent.gamma={a.gamma!r} must be in [0, 1)")
    if not 0.0 < a.tau <= 1.0:
        raise ConfigError(f"agent.tau={a.tau!r} must be in (0, 1]")
    if a.log_std_min >= a.log_std_max:
        raise ConfigError(
            f"agent.log_std_min={a.log_std_min} must be < agent.log_std_max={a.log_std_max}"
        )
    if a.grad_clip is not None:
        _positive("agent.grad_clip", a.grad_clip)
    if a.max_q_value is not None:
        _positive("agent.max_q_value", a.max_q_value)
    for path in ("actor_combiner", "critic_combiner"):
        if getattr(a, path) not in COMBINER_NAMES:
            raise ConfigError(_choice_msg(f"agent.{path}", getattr(a, path), COMBINER_NAMES))
    if a.actor_combiner in LOSS_BALANCING_COMBINERS:
        raise ConfigError(
            f"agent.actor_combiner={a.actor_combiner!r} weights tasks by their loss values, which "
            "needs non-negative losses; the SAC actor loss α·log π − Q can be negative. "
            "Allowed for the actor: mean, pcgrad (use it as agent.critic_combiner)"
        )
    if not 0.0 < a.popart_beta <= 1.0:
        raise ConfigError(f"agent.popart_beta={a.popart_beta!r} must be in (0, 1]")
    for path in ("actor_arch", "critic_arch"):
        if getattr(a, path) not in ARCH_NAMES:
            raise ConfigError(_choice_msg(f"agent.{path}", getattr(a, path), ARCH_NAMES))
    ar = a.arch
    if ar.task_encoder not in TASK_ENCODER_NAMES:
        raise ConfigError(_choice_msg("agent.arch.task_encoder", ar.task_encoder,
                                      TASK_ENCODER_NAMES))
    if ar.gating not in GATING_NAMES:
        raise ConfigError(_choice_msg("agent.arch.gating", ar.gating, GATING_NAMES))
    if ar.router_mode not in ROUTER_MODES:
        raise ConfigError(_choice_msg("agent.arch.router_mode", ar.router_mode, ROUTER_MODES))
    _positive("agent.arch.router_diversity", ar.router_diversity, allow_zero=True)
    for name in ("task_embedding_dim", "num_layers", "num_modules", "module_dim",
                 "embedding_dim", "routing_dim", "num_experts", "router_depth",
                 "router_modules", "router_temperature"):
        _positive(f"agent.arch.{name}", getattr(ar, name))
    if len(ar.expert_hidden) == 0 or any(h <= 0 for h in ar.expert_hidden):
        raise ConfigError(f"agent.arch.expert_hidden={ar.expert_hidden!r} must be a non-empty "
                          "list of positive integers")
    c = a.combiner
    _positive("agent.combiner.diagnostics_every", c.diagnostics_every, allow_zero=True)
    _positive("agent.combiner.gradnorm_alpha", c.gradnorm_alpha, allow_zero=True)
    _positive("agent.combiner.weight_lr", c.weight_lr)
    _positive("agent.combiner.dwa_temperature", c.dwa_temperature)
    _positive("agent.combiner.dwa_window", c.dwa_window)
    if a.name in SAC_AGENTS and cfg.env.name in DISCRETE_ENVS:
        other = "distral-a2c" if a.name == "distral-sac" else "mta2c"
        raise ConfigError(
            f"env.name={cfg.env.name!r} has discrete actions, which agent.name={a.name!r} "
            f"(continuous SAC) cannot drive; use agent.name={other!r}, or for {a.name} one of: "
            + ", ".join(n for n in ENV_NAMES if n not in DISCRETE_ENVS)
        )
    if a.name in DISTRAL_AGENTS:
        _validate_distral(cfg)
    if a.name == "distill":
        _validate_distill(cfg, names)

    _positive("replay.capacity", cfg.replay.capacity)
    if not on_policy and cfg.replay.capacity < num_tasks:
        raise ConfigError(
            f"replay.capacity={cfg.replay.capacity} must hold at least one transition per task "
            f"({num_tasks} tasks)"
        )
    _positive("eval.every", cfg.eval.every, allow_zero=True)
    _positive("eval.episodes_per_task", cfg.eval.episodes_per_task)
    _positive("log.every", cfg.log.every)
    _positive("checkpoint.every", cfg.checkpoint.every, allow_zero=True)
    _positive("checkpoint.keep_last", cfg.checkpoint.keep_last)
    if cfg.total_steps < num_envs:
        raise ConfigError(
            f"total_steps={cfg.total_steps} is less than one step of all {num_envs} envs"
        )


def _validate_distral(cfg: TrainConfig) -> None:
    a = cfg.agent
    if not 0.0 <= a.distral_alpha <= 1.0:
        raise ConfigError(f"agent.distral_alpha={a.distral_alpha!r} must be in [0, 1] "
                          "(1: KL-only Distral)")
    _positive("agent.distral_beta", a.distral_beta)
    if a.distral_columns not in (1, 2):
        raise ConfigError(_choice_msg("agent.distral_columns", a.distral_columns, (1, 2)))
    if a.distral_columns == 2 and (a.name != "distral-a2c" or cfg.env.name not in DISCRETE_ENVS):
        raise ConfigError(
            "agent.distral_columns=2 (task logits α·h + β·f_i) is defined for discrete actions: "
            f"it needs agent.name='distral-a2c' and a discrete env ({', '.join(DISCRETE_ENVS)}), "
            f"not agent.name={a.name!r} on env.name={cfg.env.name!r}; allowed here: 1"
        )
    if a.distral_pi0_hidden is not None and any(
            (not isinstance(h, int)) or h <= 0 for h in a.distral_pi0_hidden):
        raise ConfigError(f"agent.distral_pi0_hidden={a.distral_pi0_hidden!r} must be a list "
                          "of positive integers or null")


def parse_teacher_specs(entries: list[str], tasks: list[str]) -> dict[str, str]:
    """``agent.distill_teachers`` → ``{task: path}`` for every task (see that field). A bare
    path stands for each task not named; for a directory of teachers it becomes
    ``DIR/<task>.zip`` or ``DIR/<task>`` where that exists. Raises ConfigError."""
    named: dict[str, str] = {}
    default: str | None = None
    for e in entries:
        if "=" in e:
            task, path = (x.strip() for x in e.split("=", 1))
            if task not in tasks:
                raise ConfigError(f"agent.distill_teachers: {task!r} is not a task of this env; "
                                  f"tasks: {', '.join(tasks)}")
            if task in named:
                raise ConfigError(f"agent.distill_teachers names task {task!r} twice")
            named[task] = path
        else:
            if default is not None:
                raise ConfigError("agent.distill_teachers has more than one bare path; give "
                                  "the others as task=path")
            default = e.strip()
    missing = [t for t in tasks if t not in named]
    if missing and default is None:
        raise ConfigError(
            f"agent.distill_teachers has no teacher for task(s) {', '.join(missing)}: give one "
            "per task as task=path (a stable-baselines3 .zip or an mtrl run directory), or a "
            "directory with <task>.zip files / an mtrl run directory trained on these tasks"
        )
    out = dict(named)
    if default is not None:
        from pathlib import Path

        root = Path(default)
        run = (root / "config.yaml").exists()  # one mtrl run for all these tasks
        for t in missing:
            hit = next((c for c in (root / f"{t}.zip", root / t) if c.exists()), None)
            out[t] = default if run else str(hit or root / f"{t}.zip")
    return {t: out[t] for t in tasks}


def _validate_distill(cfg: TrainConfig, tasks: list[str]) -> None:
    a = cfg.agent
    if a.distill_loss not in DISTILL_LOSSES:
        raise ConfigError(_choice_msg("agent.distill_loss", a.distill_loss, DISTILL_LOSSES))
    if a.distill_data not in DISTILL_DATA:
        raise ConfigError(_choice_msg("agent.distill_data", a.distill_data, DISTILL_DATA))
    if not 0.0 <= a.distill_teacher_prob <= 1.0:
        raise ConfigError(f"agent.distill_teacher_prob={a.distill_teacher_prob!r} must be in "
                          "[0, 1]")
    if a.distill_temperature is not None:
        _positive("agent.distill_temperature", a.distill_temperature)
    _positive("agent.distill_feature_coef", a.distill_feature_coef, allow_zero=True)
    _positive("agent.lr", a.lr)
    if not a.actor_hidden:
        raise ConfigError("agent.actor_hidden=[] : the distillation student needs at least one "
                          "hidden layer (its features)")
    if a.actor_combiner != "mean" or a.critic_combiner != "mean":
        raise ConfigError("agent.name='distill' averages its per-task losses; leave "
                          "agent.actor_combiner and agent.critic_combiner at 'mean'")
    parse_teacher_specs(list(a.distill_teachers), tasks)


def _validate_on_policy(cfg: TrainConfig) -> None:
    a = cfg.agent
    if cfg.warmup_steps != 0:
        raise ConfigError(
            f"warmup_steps={cfg.warmup_steps}: agent.name={a.name!r} is on-policy and acts with "
            "its own policy from the first step; set warmup_steps=0"
        )
    _positive("agent.n_steps", a.n_steps)
    if not 0.0 <= a.gae_lambda <= 1.0:
        raise ConfigError(f"agent.gae_lambda={a.gae_lambda!r} must be in [0, 1]")
    _positive("agent.ent_coef", a.ent_coef, allow_zero=True)
    _positive("agent.vf_coef", a.vf_coef)
    _positive("agent.lr", a.lr)
    _positive("agent.optim_eps", a.optim_eps)
    if a.optimizer not in OPTIMIZER_NAMES:
        raise ConfigError(_choice_msg("agent.optimizer", a.optimizer, OPTIMIZER_NAMES))
    if not 0.0 < a.rmsprop_alpha < 1.0:
        raise ConfigError(f"agent.rmsprop_alpha={a.rmsprop_alpha!r} must be in (0, 1)")
    if a.torso not in TORSO_NAMES:
        raise ConfigError(_choice_msg("agent.torso", a.torso, TORSO_NAMES))
    if a.torso == "nature-cnn" and cfg.env.name not in IMAGE_ENVS:
        raise ConfigError(
            f"agent.torso='nature-cnn' needs image observations, but env.name={cfg.env.name!r} "
            "has flat vectors; allowed here: auto, none"
        )
    if a.critic_combiner != "mean":
        raise ConfigError(
            f"agent.critic_combiner={a.critic_combiner!r}: {a.name} has one joint actor-critic "
            "loss, combined by agent.actor_combiner; leave agent.critic_combiner='mean'"
        )


def _validate_env(env: EnvConfig) -> None:
    if env.name not in ENV_NAMES:
        raise ConfigError(_choice_msg("env.name", env.name, ENV_NAMES))
    if env.vector_strategy not in VECTOR_STRATEGIES:
        raise ConfigError(_choice_msg("env.vector_strategy", env.vector_strategy,
                                      VECTOR_STRATEGIES))
    _positive("env.envs_per_task", env.envs_per_task)
    is_mw = env.name in ("mt10", "mt25", "mt50", "metaworld")
    if is_mw:
        if env.envs_per_task != 1:
            raise ConfigError(
                f"env.envs_per_task={env.envs_per_task} is not supported for Meta-World "
                "(one env per task, as in the benchmark); allowed: 1"
            )
        valid = metaworld_task_lists()["all"]
        if env.name == "metaworld":
            if not env.tasks:
                raise ConfigError(
                    "env.tasks is empty; env.name='metaworld' needs a list of Meta-World v3 task "
                    f"names, e.g. --env.tasks reach-v3,push-v3. Valid names: {', '.join(valid)}"
                )
            bad = [t for t in env.tasks if t not in valid]
            if bad:
                raise ConfigError(
                    f"env.tasks contains unknown Meta-World task(s) {bad}; valid names: "
                    + ", ".join(valid)
                )
            if len(set(env.tasks)) != len(env.tasks):
                raise ConfigError(f"env.tasks={env.tasks} lists a task twice")
        elif env.tasks:
            raise ConfigError(
                f"env.tasks={env.tasks} is only used with env.name='metaworld' (a custom task "
                f"list); {env.name} has a fixed task set"
            )
    elif env.name == "atari":
        # Game names against the ROMs ale_py ships, and ranges; no emulator is built.
        from mtrl.envs.atari import available_games

        valid = available_games()
        if not env.tasks:
            raise ConfigError(
                "env.tasks is empty; env.name='atari' needs a list of games, e.g. "
                f"--env.tasks Pong,Breakout. Valid names: {', '.join(valid)}"
            )
        bad = [t for t in env.tasks if t not in valid]
        if bad:
            raise ConfigError(
                f"env.tasks contains unknown Atari game(s) {bad}; valid names: "
                + ", ".join(valid)
            )
        if len(set(env.tasks)) != len(env.tasks):
            raise ConfigError(f"env.tasks={env.tasks} lists a game twice")
        if not 0.0 <= env.sticky_actions <= 1.0:
            raise ConfigError(f"env.sticky_actions={env.sticky_actions!r} must be in [0, 1]")
        _positive("env.noop_max", env.noop_max, allow_zero=True)
        _positive("env.frame_skip", env.frame_skip)
        _positive("env.frame_stack", env.frame_stack)
        _positive("env.num_threads", env.num_threads, allow_zero=True)
        if env.max_episode_frames < env.frame_skip:
            raise ConfigError(
                f"env.max_episode_frames={env.max_episode_frames} must be >= env.frame_skip="
                f"{env.frame_skip} (at least one agent step per episode)"
            )
    else:
        if env.tasks:
            raise ConfigError(
                f"env.tasks={env.tasks} is only used with env.name='metaworld' or 'atari'"
            )
        if env.num_tasks < 1:
            raise ConfigError(f"env.num_tasks={env.num_tasks} must be >= 1")
        _positive("env.max_episode_steps", env.max_episode_steps)
    if env.name != "atari":
        defaults = EnvConfig()
        for name in ("clip_rewards", "sticky_actions", "noop_max", "frame_skip", "frame_stack",
                     "max_episode_frames", "num_threads"):
            if getattr(env, name) != getattr(defaults, name):
                raise ConfigError(
                    f"env.{name}={getattr(env, name)!r} is only used with env.name='atari'; "
                    f"leave it at {getattr(defaults, name)!r} for env.name={env.name!r}"
                )


# --------------------------------------------------------------------------------------------
# (De)serialization and overrides


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a plain dict; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(prefix + u for u in unknown)}; "
            f"allowed: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, prefix=f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}")
    return cls(**kwargs)


def field_paths(cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Map every overridable dotted field path to its type."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(field_paths(tp, prefix=f"{prefix}{f.name}."))  # type: ignore[arg-type]
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


def get_path(cfg: Any, path: str) -> Any:
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_override(cfg: TrainConfig, path: str, raw: str) -> None:
    """Apply a command-line override ``path=raw`` (path with '-' or '_'), parsing ``raw``
    according to the field's type."""
    path = path.replace("-", "_")
    paths = field_paths()
    if path not in paths:
        raise ConfigError(
            f"unknown config field '{path}'; overridable fields: {', '.join(sorted(paths))}"
        )
    value = parse_value(raw, paths[path], path)
    *parents, leaf = path.split(".")
    obj: Any = cfg
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, leaf, value)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def parse_value(raw: str, tp: Any, path: str) -> Any:
    """Parse a command-line string into a value of type ``tp``."""
    optional, inner = _is_optional(tp)
    if optional and raw.strip().lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(inner)
    if origin is list:
        (elem,) = typing.get_args(inner)
        text = raw.strip().strip("[]")
        items = [s.strip() for s in text.split(",") if s.strip()]
        return [parse_value(s, elem, path) for s in items]
    try:
        if inner is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if inner is int:
            f = float(raw)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if inner is float:
            return float(raw)
        if inner is str:
            return raw
    except ValueError:
        kind = {bool: "true/false", int: "an integer", float: "a number"}.get(inner, str(inner))
        raise ConfigError(f"{path}={raw!r} is not {kind}") from None
    raise ConfigError(f"{path}: cannot parse values of type {tp}")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Type-check a value loaded from YAML against the field type."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path} must not be null")
    origin = typing.get_origin(inner)
    if origin is list:
        (elem,) = typing.get_args(inner)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}={value!r} must be a list")
        return [_coerce(v, elem, path) for v in value]
    if inner is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if inner is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if inner in (int, str, bool) and not (
        isinstance(value, inner) and not (inner is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{path}={value!r} must be of type {inner.__name__}")
    return value


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def load_yaml(text: str) -> TrainConfig:
    import yaml

    return from_dict(TrainConfig, yaml.safe_load(text))


# Fields that may differ between a run and its resumption: they do not change the learned
# state's shape or meaning.
RESUMABLE_FIELDS = (
    "total_steps",
    "device",
    "run_dir",
    "eval.every",
    "eval.episodes_per_task",
    "eval.final",
    "log.every",
    "log.progress_bar",
    "checkpoint.every",
    "checkpoint.keep_last",
    "replay.save_with_checkpoint",
)


def diff(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two configs: {path: (a_value, b_value)}."""
    out = {}
    for path in field_paths():
        va, vb = get_path(a, path), get_path(b, path)
        if va != vb:
            out[path] = (va, vb)
    return out
