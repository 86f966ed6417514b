"""Typed experiment configuration.

Every knob of a run lives in one :class:`TrainConfig`. Configs are plain dataclasses so that
they serialize to ``config.yaml`` and back, can be overridden field by field from the command
line (``--agent.batch-size 640``, ``--agent.sac.actor-lr 1e-3``) and are validated *before*
any environment is built: :func:`validate` raises :class:`ConfigError` with a message naming the
field, the value and what is allowed.

Agent settings are nested per algorithm: fields every agent shares sit in ``agent.*`` (networks,
batch size, discount, combiners, architecture), each algorithm's own in its section
(``agent.sac.*``, ``agent.a2c.*``, ``agent.ppo.*``, ``agent.impala.*``, ``agent.distral.*``,
``agent.distill.*``),
and the validator checks the sections the chosen agent uses (:data:`mtrl.registry.AGENTS`).
The flat names of mtrl 0.1 (``agent.n_steps``, ``agent.distral_alpha``, …) are still read from
old ``config.yaml`` files and accepted on the command line (:data:`MOVED_FIELDS`).

Names of envs, architectures, combiners and agents are those of the registries
(:mod:`mtrl.registry`), where each part registers itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from mtrl.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


class _Strict:
    """Config dataclasses refuse attributes that are not their fields, so that a misspelled or
    moved field set from Python fails instead of being ignored."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise AttributeError(_not_a_field(type(self), name))
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only called for missing attributes
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(_not_a_field(type(self), name))


def _not_a_field(cls: type, name: str) -> str:
    msg = f"{cls.__name__} has no field {name!r}"
    if cls.__name__ == "AgentConfig":
        new = MOVED_FIELDS.get(f"agent.{name}")
        if new is None and name == "lr":
            new = "agent.a2c.lr, agent.ppo.lr, agent.impala.lr or agent.distill.lr"
        if new is not None:
            return f"agent.{name} moved to {new}"
    import difflib

    close = difflib.get_close_matches(name, [f.name for f in dataclasses.fields(cls)], n=1)
    return msg + (f" (did you mean {close[0]!r}?)" if close else "")


@dataclass
class EnvConfig(_Strict):
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
class CombinerConfig(_Strict):
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
    paco_loss_threshold: float = 3000.0
    """paco-maskout: a task whose loss exceeds this ε is masked out of the update and the
    compositional vector w_τ of every PaCo network the combiner watches is reset (Sun et al.
    2022; the authors' MT10 config uses 3e3)."""
    paco_reset: str = "interpolate"
    """paco-maskout: how w_τ is reset — interpolate (a random convex combination of the other
    tasks' w, the authors' default) | copy (the w of one other task, chosen at random) | none
    (mask only)."""


@dataclass
class ArchConfig(_Strict):
    """Sizes of the task-conditioned architectures (``agent.actor_arch`` / ``critic_arch``).
    ``mlp`` and ``multihead`` take their hidden sizes from ``agent.actor_hidden`` /
    ``agent.critic_hidden``; ``moe`` uses them for its head MLP; ``moore`` as the layer sizes of
    each of its experts (the last one is the representation size); ``paco`` for the MLP whose
    K copies form its parameter set Φ."""

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
    """moe, moore: number of shared expert encoders k (moore: at most the representation size,
    the last of agent.actor_hidden / critic_hidden; the MOORE paper uses 4 on MT10, 6 on
    MT50)."""
    expert_hidden: list[int] = field(default_factory=lambda: [400, 400])
    """moe: hidden sizes of each expert encoder (the last one is the representation size).
    moore's experts take agent.actor_hidden / critic_hidden instead."""
    gating: str = "care"
    """moe: care (task context attends over experts) | mmoe (one input-dependent gate per task)."""
    moore_multihead: bool = True
    """moore: one linear output layer per task (the MOORE paper on Meta-World); false: one shared
    by all tasks, which then see the task only through their expert weights w_c."""
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
    residual_block: str = "bro"
    """residual (width and number of blocks: agent.actor_hidden / agent.critic_hidden = [w] * N):
    bro (Nauman et al. 2024: Linear → LN → ReLU → Linear → LN, + skip) | simba (Lee et al. 2024:
    LN → Linear → ReLU → Linear, + skip, final LN)."""
    residual_expansion: int = 4
    """residual, simba blocks: inner width of a block = expansion × w (SimBa: 4)."""
    paco_num_params: int = 5
    """paco: size K of the shared parameter set Φ = [φ_1..φ_K] (K full copies of the network's
    weights; hidden sizes from agent.actor_hidden / critic_hidden). The PaCo authors use 5 on
    MT10."""
    paco_identical_init: bool = True
    """paco: the K copies φ_k start identical (the authors' code; the random N(0, 1) task
    vectors w_τ break the symmetry); false: each copy initialized independently."""


@dataclass
class SACConfig(_Strict):
    """Multi-task SAC (``agent.name`` mtsac, distral-sac; Haarnoja et al. 2018). Defaults follow
    the Meta-World+ MTSAC baseline (McLean et al. 2025): Adam lr 3e-4, τ 0.005, initial
    temperature 1.0, target entropy −|A|."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    tau: float = 0.005
    """Polyak step of the target critics."""
    init_alpha: float = 1.0
    target_entropy: float | None = None
    """Entropy target per task; None means -action_dim (continuous) as in Haarnoja et al. 2018."""
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    log_prob_guard: float = 0.0
    """0: the exact log-density of the tanh-squashed action (Haarnoja et al. 2018, App. C);
    > 0: log(1 − tanh²u + guard) in its correction, as stable-baselines3 and CleanRL (1e-6):
    the same except far in saturation (|u| > ~6), where the guarded term is bounded."""
    max_q_value: float | None = None
    """Clip Q targets and predictions to [-v, v] (Meta-World+ uses 5000); None disables."""
    popart_actor_scale: bool = True
    """With PopArt, divide each task's actor loss by its σ (scale-invariant actor gradients)."""
    num_critics: int = 2
    """Critics in the ensemble (>= 2); the soft target and the actor combine all of them
    (critic_reduce)."""
    critic_reduce: str | None = None
    """min | mean: how the critics combine in the target and the actor loss. None: min for the
    mse critic (clipped double Q, Fujimoto et al. 2018), mean for the categorical critic (BRC
    averages the members' probabilities)."""
    critic_loss: str = "mse"
    """mse (SAC's squared TD error) | categorical (BRC, Nauman et al. 2025: a distribution over
    num_atoms fixed atoms in [v_min, v_max], cross-entropy to the projected target)."""
    num_atoms: int = 101
    """critic_loss=categorical: atoms of the support (BRC: 101)."""
    v_min: float = -10.0
    """critic_loss=categorical: lowest atom (BRC: -10)."""
    v_max: float = 10.0
    """critic_loss=categorical: highest atom (BRC: 10)."""
    reward_normalization: bool = False
    """critic_loss=categorical: divide each task's rewards so that its returns fit the support
    (BRC's per-task return-bound scaling)."""
    fused_critics: str = "auto"
    """auto | on | off: the critics (and target critics) as one stacked ensemble applied with
    batched matmuls instead of separate networks; same numerics. Only for plain MLP critics
    (agent.critic_arch=mlp, one-hot task input, no PopArt). auto: fused on CUDA (fewer kernel
    launches), separate on CPU (fused is no faster there at MT10 sizes with one thread,
    benchmarks/train_throughput.py)."""


@dataclass
class A2CConfig(_Strict):
    """Multi-task A2C (``agent.name`` mta2c, distral-a2c; Mnih et al. 2016)."""

    n_steps: int = 5
    """Env steps per env in each rollout (one update per rollout; A3C/SB3 use 5)."""
    gae_lambda: float = 1.0
    """GAE λ (Schulman et al. 2016); 1.0 gives A3C's n-step returns."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the squared value error (G − V)²."""
    lr: float = 7e-4
    """Learning rate of its single optimizer."""
    optimizer: str = "rmsprop"
    """rmsprop (PyTorch's: mean square starts at 0) | rmsprop-tf (mean square starts at 1, as
    TensorFlow's RMSProp of the original A3C/A2C code; the Atari presets) | adam."""
    optim_eps: float = 1e-5
    """ε of RMSprop / Adam."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant α."""


@dataclass
class PPOConfig(_Strict):
    """Multi-task PPO (``agent.name`` mtppo; Schulman et al. 2017, clipped surrogate)."""

    n_steps: int = 128
    """Env steps per env in each rollout."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Task-stratified minibatches per pass (each holds every task's share)."""
    clip_range: float = 0.2
    """ε of the clipped surrogate: ratios outside [1 − ε, 1 + ε] get no gradient."""
    clip_value: float | None = None
    """Clip the value prediction's change to ±this around the rollout's value (None: off)."""
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    lr: float = 3e-4
    """Adam learning rate."""
    optim_eps: float = 1e-5
    normalize_advantage: bool = True
    """Standardize advantages per task within each minibatch."""
    target_kl: float | None = None
    """Stop a rollout's epochs early once the approximate KL to the acting policy exceeds it."""


@dataclass
class IMPALAConfig(_Strict):
    """Multi-task IMPALA learner (``agent.name`` mtimpala; Espeholt et al. 2018, the V-trace
    actor-critic of Sec. 4). Defaults: the paper's Atari settings (Table G.1; the RMSProp
    decay from its reference code), with ε and the loss in mtrl's units (per-task *mean*
    losses; the paper sums over batch and time)."""

    n_steps: int = 20
    """Unroll length: env steps per env in each rollout (one update per rollout)."""
    rho_bar: float = 1.0
    """ρ̄: truncation of the importance weights ρ_t = min(ρ̄, π/μ) of the TD errors and of the
    policy gradient (sets V-trace's fixed point)."""
    c_bar: float = 1.0
    """c̄ <= ρ̄: truncation of the trace coefficients c_t = λ·min(c̄, π/μ)."""
    vtrace_lambda: float = 1.0
    """λ in [0, 1] of the trace coefficients (Espeholt et al. 2018, Remark 2)."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss ½(v_s − V(x_s))² (the paper's "baseline loss scaling")."""
    lr: float = 6e-4
    """Learning rate of its single optimizer."""
    optimizer: str = "rmsprop-tf"
    """rmsprop-tf (mean square starts at 1, as TensorFlow's RMSProp of the paper) | rmsprop |
    adam."""
    optim_eps: float = 1.5625e-4
    """ε of RMSprop / Adam. The paper's ε = 0.01 sits inside the square root (TensorFlow) of the
    mean square of gradients of a loss *summed* over 32 × 20 steps; for mtrl's mean losses and
    PyTorch's ε outside the root that floor is √0.01 / 640 = 1.5625e-4."""
    rmsprop_alpha: float = 0.99
    """RMSprop decay α (0.99: the default of IMPALA's reference code, deepmind/scalable_agent;
    Table G.1 does not list it)."""


@dataclass
class DistralConfig(_Strict):
    """Distral (``agent.name`` distral-sac, distral-a2c; Teh et al. 2017, Eq. 2)."""

    alpha: float = 0.5
    """α = c_KL/(c_KL + c_Ent) in [0, 1]: 1 is the KL-only variant, < 1 adds an entropy bonus."""
    beta: float = 100.0
    """β = 1/(c_KL + c_Ent) > 0: the reward bonus is (α/β) log π0 − (1/β) log πi."""
    columns: int = 1
    """1: task policies with their own networks (agent.actor_arch, e.g. separate); 2: task
    logits α·h + β·f_i on π0's logits h (discrete actions, distral-a2c)."""
    pi0_hidden: list[int] | None = None
    """Hidden sizes of the distilled policy π0; None: agent.actor_hidden."""
    pi0_task_input: bool = False
    """π0 sees the one-hot task id (False: a shared policy of the observation only, as in
    Distral)."""
    tune_entropy: bool = True
    """distral-sac: c_Ent is each task's learned SAC temperature (target entropy) instead of the
    fixed (1 − α)/β; c_KL = α/β stays fixed."""


@dataclass
class DistillConfig(_Strict):
    """Policy distillation (``agent.name`` distill; Rusu et al. 2016, Parisotto et al. 2016)."""

    teachers: list[str] = field(default_factory=list)
    """One teacher per task: ``task=path`` entries (a stable-baselines3 ``.zip`` or an mtrl run
    directory), and/or one bare ``path`` for every task not named: an mtrl run directory
    trained on those tasks (any superset), or a directory holding ``<task>.zip`` files or
    ``<task>/`` run directories."""
    loss: str = "kl"
    """kl: KL(teacher ‖ student) (discrete: with temperature, Rusu et al. 2016 Eq. 3;
    continuous: closed-form Gaussian KL) | mse (Q-values/logits, or deterministic actions)."""
    temperature: float | None = None
    """Temperature τ of the teacher's softmax; None: 1 for policy teachers, 0.01 for Q-value
    (DQN) teachers (Rusu et al. 2016)."""
    feature_coef: float = 0.0
    """Weight of Actor-Mimic feature regression (Parisotto et al. 2016, Eq. 4); 0: off."""
    data: str = "mix"
    """Who acts while collecting the states the teachers label: teacher | student (DAgger,
    Ross et al. 2011) | mix (each env step, the teacher with probability teacher_prob)."""
    teacher_prob: float = 0.5
    """data=mix: probability that the teacher acts (per env and step)."""
    squash: bool = True
    """Continuous students: tanh-squashed Gaussian (to match SAC teachers); false for
    unsquashed Gaussian teachers (PPO/A2C, mtrl's mta2c)."""
    lr: float = 7e-4
    """Adam learning rate of the student."""


@dataclass
class AgentConfig(_Strict):
    """Agent settings. ``name``: an agent of :data:`mtrl.registry.AGENTS` — mtsac (multi-task
    SAC, off-policy, continuous actions), mta2c (multi-task A2C, on-policy), mtppo (multi-task
    PPO, on-policy), mtimpala (multi-task IMPALA learner: V-trace actor-critic, PopArt),
    distral-sac / distral-a2c (Distral on either), distill (policy distillation
    of per-task teachers into one student). The shared fields below follow the Meta-World+
    MTSAC baseline (400-400 MLPs, batch 1280, γ 0.99); each algorithm's own fields are in its
    section."""

    name: str = "mtsac"
    actor_hidden: list[int] = field(default_factory=lambda: [400, 400])
    """Hidden sizes of the policy (the distillation student's too)."""
    critic_hidden: list[int] = field(default_factory=lambda: [400, 400])
    """Hidden sizes of the critics / value function."""
    batch_size: int = 1280
    """Off-policy agents and distillation: total batch, stratified equally over tasks (must be
    a multiple of the number of tasks)."""
    gamma: float = 0.99
    grad_clip: float | None = None
    """Clip each network's global gradient norm to this value; None disables clipping."""
    popart: bool | None = None
    """PopArt-normalized values (per-task value heads and statistics; Hessel et al. 2019).
    None: the agent's default, on for mta2c, mtppo and mtimpala (as in Hessel et al.), off for
    mtsac."""
    popart_beta: float = 3e-4
    """Step size β of PopArt's running moments (Hessel et al. 2019 use 3e-4)."""
    actor_combiner: str = "mean"
    """How the per-task actor losses become one update (:data:`mtrl.registry.COMBINERS`):
    mean | pcgrad | paco-maskout (loss-balancing combiners need non-negative losses and are not
    allowed for the SAC actor). mta2c/mtppo: the combiner of their joint actor-critic loss."""
    critic_combiner: str = "mean"
    """mean | pcgrad | gradnorm | uncertainty | dwa | paco-maskout (PaCo's loss maskout and
    w-reset)."""
    combiner: CombinerConfig = field(default_factory=CombinerConfig)
    actor_arch: str = "mlp"
    """mlp | multihead | separate (one MLP per task) | soft-modular | routing | moe | moore
    (mixture of orthogonal experts) | residual (BRO/SimBa residual LayerNorm MLP) | paco
    (parameter-compositional: θ_τ = Φ w_τ) (sizes in agent.arch)."""
    critic_arch: str = "mlp"
    """mlp | multihead | separate | soft-modular | routing | moe | moore | residual | paco (sizes
    in agent.arch)."""
    arch: ArchConfig = field(default_factory=ArchConfig)
    torso: str = "auto"
    """On-policy agents and distillation: auto (Nature CNN for image observations, none
    otherwise) | nature-cnn | none."""
    compile: str = "off"
    """off | default | graphs: run the update eagerly, compiled with torch.compile (losses,
    optimizer steps, target update; LeanRL's approach), or on CUDA compiled and captured as
    CUDA graphs (mode reduce-overhead, capturable Adam); graphs on a CPU device compiles only
    and says so in the run log and metadata.json. mtsac, distral-sac, mta2c, distral-a2c,
    mtppo. Off by default: on CPU the compiled update is not faster (benchmarks/
    train_throughput.py); parts that cannot be compiled run eagerly, with the reason in
    metadata.json (mtrl/agents/compiling.py)."""
    sac: SACConfig = field(default_factory=SACConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    impala: IMPALAConfig = field(default_factory=IMPALAConfig)
    distral: DistralConfig = field(default_factory=DistralConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class ReplayConfig(_Strict):
    capacity: int = 1_000_000
    """Total transitions, split equally into one ring per task."""
    save_with_checkpoint: bool = True
    """Store the buffer next to the latest checkpoint so that a resumed run keeps its data."""


@dataclass
class EvalConfig(_Strict):
    every: int = 200_000
    """Evaluate every this many env steps (0: only at the end of training)."""
    episodes_per_task: int = 50
    """Meta-World protocol: 50 episodes per task, one per goal."""
    final: bool = True
    """Evaluate once more when training ends."""
    at_start: bool = True
    """With ``every`` > 0, also evaluate the untrained policy at env step 0 (a new run, not a
    resume), so that learning curves start where learning starts."""
    deterministic: bool = True
    """Act with the policy's mode (mean action / most likely action), the Meta-World protocol;
    false samples from the policy (common for Atari policy-gradient agents, whose greedy
    policies can get stuck)."""


@dataclass
class LogConfig(_Strict):
    every: int = 5_000
    """Write losses and throughput to TensorBoard every this many env steps."""
    progress_bar: bool = True
    wandb: str = ""
    """Weights & Biases project to mirror every TensorBoard value to (empty: off; needs
    ``pip install 'mtrl[wandb]'``). The W&B run lives in ``<run>/wandb/``, is named after the run
    directory, and a resumed mtrl run resumes it (id in ``<run>/wandb_run_id``)."""
    wandb_mode: str = "online"
    """online, offline (``wandb sync <run>/wandb/offline-run-*`` uploads later) or disabled."""


WANDB_MODES = ("online", "offline", "disabled")
#: agent.compile: eager, torch.compile, or torch.compile with CUDA graphs (agents/compiling.py).
COMPILE_MODES = ("off", "default", "graphs")
#: agent.sac.fused_critics.
FUSED_CRITICS = ("auto", "on", "off")
#: agent.combiner.paco_reset: the w-reset methods of the paco-maskout combiner (none: mask only).
PACO_RESETS = ("interpolate", "copy", "none")


@dataclass
class CheckpointConfig(_Strict):
    every: int = 100_000
    """Save a checkpoint every this many env steps (0: only at the end and on Ctrl-C)."""
    keep_last: int = 3


@dataclass
class CollectorConfig(_Strict):
    """Where the training envs step (:mod:`mtrl.collect`)."""

    name: str = "vector"
    """vector: in this process; ray: in remote env-runner actors on a Ray cluster
    (:mod:`mtrl.collect.ray`; ``pip install 'mtrl[ray]'``; the replay agents mtsac and
    distral-sac, and mtimpala, whose V-trace corrects for the runners' policy lag);
    pipelined: in worker processes on this machine that step while the learner updates
    (:mod:`mtrl.collect.pipelined`; one update of policy lag; the off-policy agents)."""
    workers: int = 1
    """pipelined: env worker processes; the training envs are split over them in env order
    (Meta-World: up to one per task; more than the machine's cores minus one rarely helps)."""
    runners: int = 2
    """ray: env-runner actors; the training envs are split over them in env order."""
    publish_every: int = 1
    """ray: send the learner's policy weights to the runners every this many updates; runners
    act with weights at most ``publish_every - 1`` updates old (1: always the current ones)."""
    address: str | None = None
    """ray: None starts a local Ray on this machine's CPUs; ``auto`` joins the cluster this
    machine belongs to (``ray start``); ``HOST:PORT`` the cluster of that head node."""
    max_restarts: int = 10
    """ray: times Ray restarts each runner whose process died (-1: no limit)."""
    prefetch: bool = True
    """ray: keep one request in flight: as soon as a chunk is handed to the learner, the
    runners start the next one, which they step while the learner updates (one more update of
    policy lag; the warm-up one chunk longer). false: the learner asks for each chunk when it
    needs it and waits for it (runners never behind with publish_every=1)."""


@dataclass
class TrainConfig(_Strict):
    preset: str = ""
    """Name of the preset this config came from (informational)."""
    seed: int = 0
    device: str = "auto"
    total_steps: int = 20_000_000
    """Environment steps summed over all envs (Meta-World+ convention)."""
    warmup_steps: int = 40_000
    """Env steps (summed over envs) of uniform random actions before the first update."""
    updates_per_step: int = 1
    """Off-policy agents: gradient steps per vector-env step."""
    collect_steps: int = 1
    """Off-policy agents: vector steps collected per iteration, after which the iteration makes
    ``collect_steps * updates_per_step`` updates (the same updates per env step). More than 1
    acts with one policy for the whole chunk (up to ``collect_steps - 1`` updates old at its
    end) and saves round trips to remote env runners (``--collector ray``: each request costs
    ~1.5 ms of CPU in every runner, however short the step), as Ape-X's actors send chunks."""
    run_dir: str | None = None
    plugins: list[str] = field(default_factory=list)
    """Plug-in modules the run uses (:mod:`mtrl.plugins`): dotted module names importable from
    sys.path, or absolute paths of .py files. They register extra envs, architectures,
    combiners or agents, and are imported whenever the run's config is read (``mtrl eval``,
    ``--resume``, ``mtrl report``, ``mtrl.load``); ``--plugin MODULE`` records them."""
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)


# --------------------------------------------------------------------------------------------
# Task names (known without building any environment)


def task_names(env: EnvConfig) -> list[str]:
    """Task names of an env config, in task-id order. Raises ConfigError on unknown names."""
    from mtrl.registry import ENVS

    return list(ENVS.get(env.name, "env.name")["task_names"](env))


def metaworld_task_lists() -> dict[str, list[str]]:
    """The MT10/MT25/MT50 task names in Meta-World's own order, and all v3 tasks."""
    from mtrl.envs.metaworld import metaworld_task_lists as lists

    return lists()


# --------------------------------------------------------------------------------------------
# Validation


def choice_message(field_name: str, value: Any, allowed: typing.Iterable[Any]) -> str:
    """``field=value is not valid; allowed: a, b`` (with "did you mean" for near misses)."""
    from mtrl.registry import unknown_name_message

    return unknown_name_message(field_name, value, [str(a) for a in allowed])


def check_positive(path: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` > 0 (>= 0 with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}={value!r} must be {bound}")


def check_sizes(path: str, sizes: Any, *, allow_empty: bool = True) -> None:
    """Raise ConfigError unless ``sizes`` is a list of positive integers (non-empty unless
    ``allow_empty``)."""
    if any((not isinstance(s, int)) or s <= 0 for s in sizes):
        raise ConfigError(f"{path}={sizes!r} must be a list of positive integers")
    if not sizes and not allow_empty:
        raise ConfigError(f"{path}=[] : at least one hidden layer is needed")


def check_stratified_batch(cfg: TrainConfig, num_tasks: int) -> None:
    """``agent.batch_size`` > 0 and a multiple of the number of tasks (stratified batches)."""
    a = cfg.agent
    check_positive("agent.batch_size", a.batch_size)
    if a.batch_size % num_tasks != 0:
        lo = max(num_tasks, a.batch_size // num_tasks * num_tasks)
        raise ConfigError(
            f"agent.batch_size={a.batch_size} must be divisible by the number of tasks "
            f"({num_tasks} for env.name={cfg.env.name!r}) so that every task gets the same "
            f"number of samples; e.g. {lo} or {lo + num_tasks}"
        )


#: Seeds are 31-bit: env k of a run is seeded with ``seed + k``, and Meta-World seeds NumPy's
#: legacy generator, which takes 32-bit seeds (see :mod:`mtrl.seeding`).
MAX_SEED = 2**31 - 1
#: The largest integer any field may hold (what a 64-bit counter, NumPy and torch accept).
MAX_INT = 2**63 - 1
#: :class:`mtrl.data.replay.MultiTaskReplayBuffer` holds at most this many transitions.
REPLAY_MAX_CAPACITY = 2**24


def check_seed(path: str, seed: Any) -> None:
    """Raise ConfigError unless ``seed`` is an integer in ``[0, MAX_SEED]``."""
    if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or not 0 <= int(seed) <= MAX_SEED):
        raise ConfigError(
            f"{path}={seed!r} must be an integer in [0, {MAX_SEED}] (31 bits: env k is seeded "
            "with seed + k, and NumPy's legacy seeding takes 32-bit seeds)"
        )


def _check_number(path: str, value: Any, tp: Any) -> None:
    if value is None:
        return
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        if not -MAX_INT <= int(value) <= MAX_INT:
            raise ConfigError(f"{path}={value} does not fit in 64 bits (integers must be "
                              f"between -{MAX_INT} and {MAX_INT})")


def check_numbers(cfg: Any, prefix: str = "") -> None:
    """Every float field of every config section (and every entry of a float list) is a
    finite number, and every int field an integer that fits in 64 bits; raise ConfigError
    naming the dotted field (``agent.sac.init_alpha must be a finite number, got inf``)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = prefix + f.name
        if dataclasses.is_dataclass(value):
            check_numbers(value, path + ".")
            continue
        _, inner = _is_optional(hints[f.name])
        if typing.get_origin(inner) is list:
            (elem,) = typing.get_args(inner)
            if isinstance(value, list | tuple):
                for i, v in enumerate(value):
                    _check_number(f"{path}[{i}]", v, elem)
        else:
            _check_number(path, value, inner)


def _count_tasks(env: EnvConfig) -> int:
    """The number of tasks of an env config, without listing them when the env takes a
    ``num_tasks`` field (a huge num_tasks fails the memory check, not a list of names)."""
    from mtrl.registry import ENVS

    if "num_tasks" in ENVS.get(env.name, "env.name")["uses"]:
        return int(env.num_tasks)
    return len(task_names(env))


def _uses_replay_buffer(agent: Any) -> bool:
    """Whether a registered agent stores transitions in a MultiTaskReplayBuffer."""
    try:
        from mtrl.agents.specs import replay_path
    except ImportError:  # pragma: no cover
        return False
    return agent.get("data_path") is replay_path


# --------------------------------------------------------------------------------------------
# Memory: refuse sizes the machine cannot hold, before anything is allocated

_FLOAT = 4  # bytes of a float32
#: (observation values, bytes per value, action dim, image observations) of the built-in envs,
#: known without building them. Envs not listed count as one value (a lower bound).
_ENV_SIZES: dict[str, tuple[int, int, int, bool]] = {
    "toy-reach": (2, 4, 2, False),
    "toy-reach-discrete": (2, 4, 1, False),
    **{name: (39, 4, 4, False) for name in ("mt10", "mt25", "mt50", "metaworld")},
}
_NATURE_CNN_FEATURES = 512
_BYTES_PER_TASK = 256  # its name, per-task statistics and env state: a lower bound


def _env_sizes(env: EnvConfig) -> tuple[int, int, int, bool]:
    if env.name == "atari":
        return max(1, env.frame_stack) * 84 * 84, 1, 1, True
    return _ENV_SIZES.get(env.name, (1, 4, 1, False))


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the machine's RAM, or a smaller cgroup limit
    (None if unknown)."""
    total: int | None = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max",
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as fh:
                limit = int(fh.read().strip())  # "max": no limit (ValueError)
        except (OSError, ValueError):
            continue
        total = limit if total is None else min(total, limit)
        break
    return total if total and total > 0 else None


def format_bytes(n: float) -> str:
    """``4.1 TB``, ``24 GB``, ``512 B`` (powers of 1024)."""
    unit = "B"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1024 or unit == "EB":
            break
        n /= 1024
    if n >= 10_000:
        return f"{n:.3g} {unit}"
    return f"{n:.1f} {unit}" if n < 10 and unit != "B" else f"{n:.0f} {unit}"


def _mlp_params(in_dim: int, hidden: list[int], out_dim: int) -> int:
    sizes = [in_dim, *hidden, out_dim]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _net_params(arch_name: str, hidden: list[int], in_dim: int, out_dim: int, num_tasks: int,
                ar: ArchConfig) -> int:
    """A lower bound of the parameters of a task-conditioned network (the dominant terms of
    :mod:`mtrl.modules.nets`), without the task input (counted by the caller)."""
    if arch_name == "separate":
        return num_tasks * _mlp_params(in_dim, hidden, out_dim)
    if arch_name == "multihead":
        last = hidden[-1] if hidden else in_dim
        return _mlp_params(in_dim, hidden[:-1], last) + num_tasks * (last * out_dim + out_dim)
    if arch_name == "soft-modular":
        return (ar.num_layers * ar.num_modules * ar.module_dim ** 2
                + ar.embedding_dim * (in_dim + ar.routing_dim) + ar.module_dim * out_dim)
    if arch_name == "routing":
        return (ar.router_depth * ar.router_modules * ar.module_dim ** 2
                + ar.module_dim * (in_dim + out_dim))
    if arch_name == "moe":
        rep = ar.expert_hidden[-1] if ar.expert_hidden else in_dim
        return (ar.num_experts * _mlp_params(in_dim, list(ar.expert_hidden)[:-1], rep)
                + _mlp_params(rep, hidden, out_dim))
    if arch_name == "moore":
        rep = hidden[-1] if hidden else in_dim
        heads = num_tasks if ar.moore_multihead else 1
        return (ar.num_experts * _mlp_params(in_dim, hidden[:-1], rep)
                + heads * (rep * out_dim + out_dim))
    if arch_name == "residual":  # mtrl.modules.residual.ResidualNet, hidden = [w] * N
        w, n = (hidden[0] if hidden else 1), len(hidden)
        if ar.residual_block == "bro":  # projection + LN, N × (2 linear + 2 LN), output
            return in_dim * w + 3 * w + n * (2 * w * w + 6 * w) + w * out_dim + out_dim
        e = ar.residual_expansion * w  # embedding, N × (LN + w→e→w), final LN, output
        return in_dim * w + w + n * (2 * w * e + e + 3 * w) + 2 * w + w * out_dim + out_dim
    if arch_name == "paco":  # K full copies of the MLP's weights (Φ)
        return ar.paco_num_params * _mlp_params(in_dim, hidden, out_dim)
    return _mlp_params(in_dim, hidden, out_dim)


def _first_width(arch_name: str, hidden: list[int], ar: ArchConfig) -> int:
    """Width of the layer that sees a one-hot task input."""
    if arch_name in ("soft-modular", "routing"):
        return ar.module_dim
    if arch_name == "moe":
        return ar.expert_hidden[0] if ar.expert_hidden else 1
    if arch_name == "moore":  # the task weights w_c: one row of num_experts per task
        return ar.num_experts
    if arch_name == "paco":  # the compositional vectors w_τ: one row of K per task
        return ar.paco_num_params
    return hidden[0] if hidden else 1


def memory_needs(cfg: TrainConfig, num_tasks: int) -> list[tuple[str, str, int]]:
    """``(field=value, what, bytes)``: lower-bound estimates of the largest allocations of a
    run of ``cfg`` (buffers, one batch, networks with their gradients and Adam state)."""
    from mtrl.registry import AGENTS

    a, ar = cfg.agent, cfg.agent.arch
    obs, obs_bytes, act, image = _env_sizes(cfg.env)
    num_envs = num_tasks * max(1, cfg.env.envs_per_task)
    entry = AGENTS.get(a.name, "agent.name")
    out: list[tuple[str, str, int]] = []
    hidden_sum = max(1, sum(a.actor_hidden) + sum(a.critic_hidden))
    hidden = f"agent.actor_hidden={a.actor_hidden} and agent.critic_hidden={a.critic_hidden}"

    def activations(lead: str, rows: int, what: str) -> tuple[str, str, int]:
        # rows × hidden units: blame the larger factor
        if rows >= hidden_sum:
            return lead, f"{what} (x {hidden_sum} hidden units)", rows * hidden_sum * _FLOAT
        return hidden, f"{what} ({rows} rows)", rows * hidden_sum * _FLOAT

    if entry.get("on_policy"):
        section = next((s for s in ("ppo", "impala") if s in entry.get("sections", ())), "a2c")
        n_steps = getattr(a, section).n_steps
        rows = (n_steps + 1) * num_envs
        out.append((f"agent.{section}.n_steps={n_steps}",
                    f"the rollout storage ({n_steps} steps x {num_envs} envs x {obs} "
                    "observation values)",
                    rows * (obs * obs_bytes + (act + 6) * _FLOAT)))
        out.append(activations(f"agent.{section}.n_steps={n_steps}", n_steps * num_envs,
                               f"the activations of one update over the rollout of {num_envs} "
                               "envs"))
    else:
        rows = (cfg.replay.capacity // max(1, num_tasks)) * num_tasks
        if a.name == "distill":
            out.append((f"replay.capacity={cfg.replay.capacity}",
                        f"the state buffer ({obs} observation values per state)",
                        rows * obs * obs_bytes))
            row = obs * obs_bytes
        else:
            row = (2 * obs + act + 2) * _FLOAT
            out.append((f"replay.capacity={cfg.replay.capacity}",
                        f"the replay buffer ({row} bytes per transition)", rows * row))
        out.append((f"agent.batch_size={a.batch_size}", "one training batch",
                    a.batch_size * row))
        out.append(activations(f"agent.batch_size={a.batch_size}", a.batch_size,
                               "the activations of one training batch"))
    in_dim = _NATURE_CNN_FEATURES if image else obs
    nets = [("actor", a.actor_arch, list(a.actor_hidden), in_dim, 2 * act)]
    nets.append(("critic", a.critic_arch, list(a.critic_hidden), in_dim + act, 1))
    for role, arch_name, sizes, n_in, n_out in nets:
        params = _net_params(arch_name, sizes, n_in, n_out, num_tasks, ar)
        lead = (f"agent.{role}_hidden={sizes}" if arch_name in ("mlp", "multihead", "separate")
                else f"agent.{role}_arch={arch_name!r} (sizes in agent.arch)")
        # weights, gradients and Adam's two moments
        out.append((lead, f"the {role} network (~{params:.3g} parameters, with gradients and "
                    "optimizer state)", 4 * params * _FLOAT))
    out.append(_task_input_need(cfg, num_tasks))
    # each env: its observation, the stacked copies the collector keeps, and its state
    out.append((f"env.envs_per_task={cfg.env.envs_per_task}",
                f"{num_envs} envs ({num_tasks} tasks)",
                num_envs * (4 * obs * obs_bytes + _BYTES_PER_TASK)))
    return out


def _task_input_need(cfg: TrainConfig, num_tasks: int) -> tuple[str, str, int]:
    """The networks' one-hot task inputs (or task embeddings): ``num_tasks`` × the width of
    the layers that see them."""
    a, ar = cfg.agent, cfg.agent.arch
    width = (_first_width(a.actor_arch, list(a.actor_hidden), ar)
             + _first_width(a.critic_arch, list(a.critic_hidden), ar))
    params = num_tasks * (max(1, width) if ar.task_encoder == "one-hot"
                          else ar.task_embedding_dim + max(1, width))
    lead = (f"env.num_tasks={cfg.env.num_tasks}" if "num_tasks" in _env_uses(cfg.env)
            else f"{num_tasks} tasks")
    return lead, "the task inputs of the networks", 4 * params * _FLOAT


def _env_uses(env: EnvConfig) -> tuple[str, ...]:
    from mtrl.registry import ENVS

    return tuple(ENVS.get(env.name, "env.name")["uses"])


def check_memory(cfg: TrainConfig, num_tasks: int, available: int | None = None) -> None:
    """Raise ConfigError when the run's buffers, batch or networks (:func:`memory_needs`) need
    more memory than this machine has (``available``: :func:`machine_memory`)."""
    _check_needs(memory_needs(cfg, num_tasks),
                 machine_memory() if available is None else available)


def _check_needs(needs: list[tuple[str, str, int]], available: int | None) -> None:
    if available is None:
        return
    lead, what, biggest = max(needs, key=lambda n: n[2])
    if biggest > available:
        raise ConfigError(f"{lead} needs ~{format_bytes(biggest)} of memory for {what}; "
                          f"this machine has {format_bytes(available)}")
    total = sum(n[2] for n in needs)
    if total > available:
        parts = ", ".join(f"{what.split(' (')[0]} ~{format_bytes(b)}"
                          for _, what, b in sorted(needs, key=lambda n: -n[2])[:3])
        raise ConfigError(f"this config needs ~{format_bytes(total)} of memory ({parts}); "
                          f"this machine has {format_bytes(available)}")


def env_info(env: EnvConfig) -> dict[str, Any]:
    """The registered facts of an env config's env (``discrete``, ``image``, ``uses``)."""
    from mtrl.registry import ENVS

    return ENVS.get(env.name, "env.name").info


def validate(cfg: TrainConfig, *, memory: bool = True) -> None:
    """Check every field of ``cfg`` that the chosen env and agent use; raise ConfigError
    naming the first bad field. Every float must be finite (:func:`check_numbers`), and with
    ``memory`` the run's buffers, batch and networks must fit this machine's memory
    (:func:`check_memory`; code that only evaluates a run can pass ``memory=False``, which
    also skips the check that the wandb package is installed when ``log.wandb`` is set)."""
    from mtrl.registry import AGENTS, ARCHITECTURES, COMBINERS

    check_seed("seed", cfg.seed)
    check_numbers(cfg)
    _validate_env(cfg.env)
    num_tasks = _count_tasks(cfg.env)
    # A task list that cannot fit is refused before its names are listed.
    _check_needs([(f"env.num_tasks={num_tasks}" if "num_tasks" in _env_uses(cfg.env)
                   else f"{num_tasks} tasks", "the task list", num_tasks * _BYTES_PER_TASK)],
                 machine_memory())
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

    if cfg.device not in DEVICES:
        raise ConfigError(choice_message("device", cfg.device, DEVICES))
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device='cuda' but CUDA is not available to this torch "
                f"({torch.__version__}); allowed here: auto, cpu"
            )
    check_positive("total_steps", cfg.total_steps)
    check_positive("warmup_steps", cfg.warmup_steps, allow_zero=True)
    check_positive("updates_per_step", cfg.updates_per_step)
    check_positive("collect_steps", cfg.collect_steps)

    a = cfg.agent
    agent = AGENTS.get(a.name, "agent.name")
    if cfg.collect_steps != 1 and agent.get("on_policy"):
        raise ConfigError(f"collect_steps={cfg.collect_steps} is for the off-policy agents; "
                          f"agent.name={a.name!r} collects its rollout length per update")
    check_sizes("agent.actor_hidden", a.actor_hidden)
    check_sizes("agent.critic_hidden", a.critic_hidden)
    if not 0.0 <= a.gamma < 1.0:
        raise ConfigError(f"agent.gamma={a.gamma!r} must be in [0, 1)")
    if a.grad_clip is not None:
        check_positive("agent.grad_clip", a.grad_clip)
    if not 0.0 < a.popart_beta <= 1.0:
        raise ConfigError(f"agent.popart_beta={a.popart_beta!r} must be in (0, 1]")
    for path in ("actor_combiner", "critic_combiner"):
        COMBINERS.get(getattr(a, path), f"agent.{path}")
    for path in ("actor_arch", "critic_arch"):
        entry = ARCHITECTURES.get(getattr(a, path), f"agent.{path}")
        if entry.check is not None:
            entry.check(a.arch)
    _validate_arch(a.arch)
    _validate_residual(a)
    _validate_moore(a)
    c = a.combiner
    check_positive("agent.combiner.diagnostics_every", c.diagnostics_every, allow_zero=True)
    check_positive("agent.combiner.gradnorm_alpha", c.gradnorm_alpha, allow_zero=True)
    check_positive("agent.combiner.weight_lr", c.weight_lr)
    check_positive("agent.combiner.dwa_temperature", c.dwa_temperature)
    check_positive("agent.combiner.dwa_window", c.dwa_window)
    check_positive("agent.combiner.paco_loss_threshold", c.paco_loss_threshold)
    if c.paco_reset not in PACO_RESETS:
        raise ConfigError(choice_message("agent.combiner.paco_reset", c.paco_reset, PACO_RESETS))
    if a.compile not in COMPILE_MODES:
        raise ConfigError(choice_message("agent.compile", a.compile, COMPILE_MODES))
    if a.compile != "off" and not agent.get("compiles"):
        compiled = ", ".join(e.name for e in AGENTS if e.get("compiles"))
        raise ConfigError(f"agent.compile={a.compile!r}: agent.name={a.name!r} has no compiled "
                          f"update (agents with one: {compiled}); allowed here: off")
    if agent.get("continuous_only") and env_info(cfg.env)["discrete"]:
        from mtrl.registry import ENVS

        continuous = [e.name for e in ENVS if not e["discrete"]]
        other = {"mtsac": "mta2c", "distral-sac": "distral-a2c"}.get(a.name, "mta2c")
        raise ConfigError(
            f"env.name={cfg.env.name!r} has discrete actions, which agent.name={a.name!r} "
            f"(continuous actions only) cannot drive; use agent.name={other!r}, or for "
            f"{a.name} one of: " + ", ".join(continuous)
        )
    if agent.get("on_policy") and cfg.warmup_steps != 0:
        raise ConfigError(
            f"warmup_steps={cfg.warmup_steps}: agent.name={a.name!r} is on-policy and acts with "
            "its own policy from the first step; set warmup_steps=0"
        )
    if agent.check is not None:
        agent.check(cfg, num_tasks)

    check_positive("replay.capacity", cfg.replay.capacity)
    if not agent.get("on_policy") and cfg.replay.capacity < num_tasks:
        raise ConfigError(
            f"replay.capacity={cfg.replay.capacity} must hold at least one transition per task "
            f"({num_tasks} tasks)"
        )
    check_positive("eval.every", cfg.eval.every, allow_zero=True)
    check_positive("eval.episodes_per_task", cfg.eval.episodes_per_task)
    check_positive("log.every", cfg.log.every)
    if cfg.log.wandb_mode not in WANDB_MODES:
        raise ConfigError(choice_message("log.wandb_mode", cfg.log.wandb_mode, WANDB_MODES))
    if memory and cfg.log.wandb and cfg.log.wandb_mode != "disabled":
        # Only when validating for training (evaluation logs nothing); found, never imported.
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("log.wandb needs the wandb package: pip install 'mtrl[wandb]'")
    check_positive("checkpoint.every", cfg.checkpoint.every, allow_zero=True)
    check_positive("checkpoint.keep_last", cfg.checkpoint.keep_last)
    _validate_collector(cfg, agent, num_envs, memory=memory)
    if cfg.total_steps < num_envs:
        raise ConfigError(
            f"total_steps={cfg.total_steps} is less than one step of all {num_envs} envs "
            f"({num_tasks} tasks x env.envs_per_task={cfg.env.envs_per_task})"
        )
    if memory:
        check_memory(cfg, num_tasks)
    if _uses_replay_buffer(agent) and cfg.replay.capacity > REPLAY_MAX_CAPACITY:
        raise ConfigError(
            f"replay.capacity={cfg.replay.capacity} is above the replay buffer's limit of "
            f"{REPLAY_MAX_CAPACITY} (2**24) transitions"
        )


COLLECTORS = ("vector", "ray", "pipelined")


def _validate_collector(cfg: TrainConfig, agent: Any, num_envs: int, *, memory: bool) -> None:
    """``collector.*``: the ray fields only with collector.name=ray; remote runners only for
    the replay agents (they act with the uniform warm-up or the agent's own policy) and the
    on-policy agents that learn from lagged unrolls (``remote_rollouts``: mtimpala), and the
    ray package installed (checked with ``memory``, i.e. when validating for training)."""
    import re

    from mtrl.registry import AGENTS

    c = cfg.collector
    if c.name not in COLLECTORS:
        raise ConfigError(choice_message("collector.name", c.name, COLLECTORS))
    defaults = CollectorConfig()
    if c.name != "pipelined" and c.workers != defaults.workers:
        raise ConfigError(f"collector.workers={c.workers!r} is only used with collector.name="
                          f"'pipelined'; leave it at {defaults.workers!r} for collector.name="
                          f"{c.name!r}")
    if c.name != "ray":
        for f in ("runners", "publish_every", "address", "max_restarts", "prefetch"):
            if getattr(c, f) != getattr(defaults, f):
                raise ConfigError(f"collector.{f}={getattr(c, f)!r} is only used with "
                                  f"collector.name='ray'; leave it at {getattr(defaults, f)!r} "
                                  f"for collector.name={c.name!r}")
    if c.name == "pipelined":
        _validate_pipelined(cfg, agent, num_envs)
    if c.name != "ray":
        return
    if not (_uses_replay_buffer(agent) or agent.get("remote_rollouts")):
        why = ("an on-policy agent: its data path feeds each step to the learner's rollout as "
               "it is taken (policy.observe), which remote runners cannot do"
               if agent.get("on_policy") else "its behaviour policy lives in the learner")
        ok = [e.name for e in AGENTS if _uses_replay_buffer(e) or e.get("remote_rollouts")]
        raise ConfigError(f"collector.name='ray' does not support agent.name={cfg.agent.name!r}"
                          f" ({why}); use collector.name='vector', or one of: {', '.join(ok)}")
    _check_env_split(cfg, "runners", "runner", num_envs)
    check_positive("collector.publish_every", c.publish_every)
    if c.max_restarts < -1:
        raise ConfigError(f"collector.max_restarts={c.max_restarts!r} must be >= 0, or -1 "
                          "(no limit)")
    if c.address is not None and c.address != "auto" and not re.fullmatch(
            r"(ray://)?[^\s:/]+:\d{1,5}", c.address):
        raise ConfigError(f"collector.address={c.address!r} is not valid; allowed: none (start "
                          "a local Ray), auto (this machine's cluster), HOST:PORT")
    if memory:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("collector.name='ray' needs the ray package: "
                              "pip install 'mtrl[ray]'")


def _validate_pipelined(cfg: TrainConfig, agent: Any, num_envs: int) -> None:
    """``collector.name=pipelined``: not for on-policy agents (the collector acts one update
    ahead, their rollout must come from the policy being updated), and workers that each get
    at least one env (several workers: envs that build task subsets)."""
    from mtrl.registry import AGENTS

    if agent.get("on_policy"):
        ok = [e.name for e in AGENTS if not e.get("on_policy")]
        raise ConfigError(f"collector.name='pipelined' does not support agent.name="
                          f"{cfg.agent.name!r} (an on-policy agent: its rollout must be acted "
                          "by the policy being updated, the pipelined collector acts one update "
                          f"ahead); use collector.name='vector', or one of: {', '.join(ok)}")
    _check_env_split(cfg, "workers", "worker", num_envs)


def _check_env_split(cfg: TrainConfig, field_name: str, noun: str, num_envs: int) -> None:
    """``collector.<field_name>`` processes that split the training envs in env order (Ray
    runners, pipelined workers): each gets at least one env, and several need an env builder
    that takes task subsets."""
    from mtrl.registry import ENVS

    n = getattr(cfg.collector, field_name)
    if n < 1:
        raise ConfigError(f"collector.{field_name}={n!r} must be >= 1")
    if n > num_envs:
        raise ConfigError(f"collector.{field_name}={n} is more than the {num_envs} training "
                          f"env(s); every {noun} needs at least one env")
    if n > 1 and not ENVS.get(cfg.env.name, "env.name").get("task_subsets"):
        raise ConfigError(f"env.name={cfg.env.name!r} cannot be split over collector."
                          f"{field_name}={n} (its builder takes no task subset); use "
                          f"collector.{field_name}=1")


def _validate_arch(ar: ArchConfig) -> None:
    """Option names and sizes of ``agent.arch`` (the name lists are the modules' own)."""
    from mtrl.modules.moe import GATINGS
    from mtrl.modules.routing import ROUTER_MODES
    from mtrl.modules.task_encoding import TASK_ENCODERS

    if ar.task_encoder not in TASK_ENCODERS:
        raise ConfigError(choice_message("agent.arch.task_encoder", ar.task_encoder,
                                         TASK_ENCODERS))
    if ar.gating not in GATINGS:
        raise ConfigError(choice_message("agent.arch.gating", ar.gating, GATINGS))
    if ar.router_mode not in ROUTER_MODES:
        raise ConfigError(choice_message("agent.arch.router_mode", ar.router_mode,
                                         ROUTER_MODES))
    check_positive("agent.arch.router_diversity", ar.router_diversity, allow_zero=True)
    for name in ("task_embedding_dim", "num_layers", "num_modules", "module_dim",
                 "embedding_dim", "routing_dim", "num_experts", "router_depth",
                 "router_modules", "router_temperature"):
        check_positive(f"agent.arch.{name}", getattr(ar, name))
    if len(ar.expert_hidden) == 0 or any(h <= 0 for h in ar.expert_hidden):
        raise ConfigError(f"agent.arch.expert_hidden={ar.expert_hidden!r} must be a non-empty "
                          "list of positive integers")
    check_positive("agent.arch.paco_num_params", ar.paco_num_params)


def _validate_moore(a: AgentConfig) -> None:
    """moore orthonormalizes agent.arch.num_experts representations of the network's last hidden
    size: there must be room for that many orthonormal directions."""
    for role in ("actor", "critic"):
        sizes = getattr(a, f"{role}_hidden")
        if getattr(a, f"{role}_arch") != "moore":
            continue
        if not sizes:
            raise ConfigError(f"agent.{role}_hidden=[]: agent.{role}_arch='moore' needs the "
                              "layer sizes of its experts (the last is the representation size)")
        if role == "critic" and a.popart and len(sizes) < 2:
            raise ConfigError(
                f"agent.critic_hidden={sizes}: with agent.popart the critic is a moore body of "
                "agent.critic_hidden[:-1] under per-task PopArt heads, so it needs at least two "
                "sizes")
        if a.arch.num_experts > sizes[-1]:
            raise ConfigError(
                f"agent.arch.num_experts={a.arch.num_experts} orthonormal experts need a "
                f"representation of at least that many units, but agent.{role}_hidden={sizes} "
                f"ends in {sizes[-1]} (agent.{role}_arch='moore')")


def _validate_residual(a: AgentConfig) -> None:
    """residual: one width for the projection and every block (``hidden = [w] * N``), a known
    block design and a positive expansion."""
    from mtrl.modules.residual import RESIDUAL_BLOCKS

    if a.arch.residual_block not in RESIDUAL_BLOCKS:
        raise ConfigError(choice_message("agent.arch.residual_block", a.arch.residual_block,
                                         RESIDUAL_BLOCKS))
    check_positive("agent.arch.residual_expansion", a.arch.residual_expansion)
    for role in ("actor", "critic"):
        sizes = getattr(a, f"{role}_hidden")
        if getattr(a, f"{role}_arch") == "residual" and (
                not sizes or any(h != sizes[0] for h in sizes)):
            raise ConfigError(
                f"agent.{role}_hidden={sizes}: agent.{role}_arch='residual' takes [w] * N, N "
                "residual blocks of one width w (e.g. [512, 512])")

def _validate_env(env: EnvConfig) -> None:
    """The env's name, the fields every env uses, the registered env's own checks, and that
    fields only other envs use keep their defaults."""
    from mtrl.registry import ENVS

    entry = ENVS.get(env.name, "env.name")
    check_positive("env.envs_per_task", env.envs_per_task)
    used = set(entry["uses"])
    defaults = EnvConfig()
    for other in sorted({f for e in ENVS for f in e["uses"]} - used):
        value, default = getattr(env, other), getattr(defaults, other)
        if value != default:
            users = [e.name for e in ENVS if other in e["uses"]]
            raise ConfigError(
                f"env.{other}={value!r} is only used with env.name="
                + " or ".join(repr(u) for u in users)
                + f"; leave it at {default!r} for env.name={env.name!r}"
            )
    if entry.check is not None:
        entry.check(env)


AGENT_SECTIONS = ("sac", "a2c", "ppo", "impala", "distral", "distill")


def unused_field_message(cfg: TrainConfig, path: str) -> str | None:
    """Why field ``path`` has no effect on a run of ``cfg`` (an algorithm section the chosen
    agent does not read, or an env field the chosen env does not use), or None."""
    from mtrl.registry import AGENTS, ENVS

    parts = path.split(".")
    if len(parts) >= 3 and parts[0] == "agent" and parts[1] in AGENT_SECTIONS:
        used = AGENTS.get(cfg.agent.name, "agent.name").get("sections", ())
        if parts[1] not in used:
            users = [e.name for e in AGENTS if parts[1] in e.get("sections", ())]
            return (f"{path} is not used by agent.name={cfg.agent.name!r} (the agent.{parts[1]}.* "
                    f"fields belong to {', '.join(users)})")
    if len(parts) == 2 and parts[0] == "env":
        env_fields = {f for e in ENVS for f in e["uses"]}
        if parts[1] in env_fields and parts[1] not in ENVS.get(cfg.env.name, "env.name")["uses"]:
            users = [e.name for e in ENVS if parts[1] in e["uses"]]
            return f"{path} is not used by env.name={cfg.env.name!r} (only by {', '.join(users)})"
    return None


# --------------------------------------------------------------------------------------------
# Fields of mtrl 0.1's flat agent config, now in the algorithm sections

#: ``agent.<old>`` → ``agent.<section>.<new>``. ``agent.lr`` belongs to the section of the
#: agent that uses it (a2c, ppo or distill; not SAC, whose rates are agent.sac.*_lr).
MOVED_FIELDS: dict[str, str] = {
    **{f"agent.{k}": f"agent.sac.{k}" for k in (
        "actor_lr", "critic_lr", "alpha_lr", "tau", "init_alpha", "target_entropy",
        "log_std_min", "log_std_max", "max_q_value", "popart_actor_scale")},
    **{f"agent.{k}": f"agent.a2c.{k}" for k in (
        "n_steps", "gae_lambda", "ent_coef", "vf_coef", "optimizer", "optim_eps",
        "rmsprop_alpha")},
    **{f"agent.distral_{k}": f"agent.distral.{k}" for k in (
        "alpha", "beta", "columns", "pi0_hidden", "pi0_task_input", "tune_entropy")},
    **{f"agent.distill_{k}": f"agent.distill.{k}" for k in (
        "teachers", "loss", "temperature", "feature_coef", "data", "teacher_prob", "squash")},
}

_LR_SECTION = {"mta2c": "a2c", "distral-a2c": "a2c", "mtppo": "ppo", "mtimpala": "impala",
               "distill": "distill"}


def moved_path(path: str, agent_name: str) -> str | None:
    """The current path of a field of mtrl 0.1's flat agent config, for an agent named
    ``agent_name`` (None if ``path`` did not move). Raises ConfigError for ``agent.lr`` with
    an agent that has no single learning rate."""
    if path in MOVED_FIELDS:
        return MOVED_FIELDS[path]
    if path == "agent.lr":
        section = _LR_SECTION.get(agent_name)
        if section is None:
            raise ConfigError(
                f"agent.lr is not used by agent.name={agent_name!r}; its learning rates are "
                "agent.sac.actor_lr, agent.sac.critic_lr and agent.sac.alpha_lr"
            )
        return f"agent.{section}.lr"
    return None


def _migrate_agent_dict(agent: dict[str, Any]) -> dict[str, Any]:
    """A flat agent mapping of mtrl 0.1 (``config.yaml`` of an older run) in today's layout."""
    out = dict(agent)
    name = str(out.get("name", "mtsac"))
    for key in list(out):
        path = f"agent.{key}"
        if path not in MOVED_FIELDS and path != "agent.lr":
            continue
        if path == "agent.lr" and name not in _LR_SECTION:
            out.pop(key)  # SAC never used it
            continue
        new = moved_path(path, name)
        assert new is not None
        _, section, leaf = new.split(".")
        out.setdefault(section, {})
        if isinstance(out[section], dict):
            out[section].setdefault(leaf, out[key])
        out.pop(key)
    return out


# --------------------------------------------------------------------------------------------
# (De)serialization and overrides


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a plain dict; unknown keys are an error (with the
    closest field name). Flat agent fields of mtrl 0.1 are moved to their sections."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got "
                          f"{type(data).__name__}")
    if cls is AgentConfig:
        data = _migrate_agent_dict(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        import difflib

        shown = [f"{prefix}{u} (did you mean {prefix}{close[0]}?)" if close else prefix + u
                 for u in unknown
                 for close in [difflib.get_close_matches(u, list(fields), n=1)]]
        raise ConfigError(
            f"unknown field(s) {', '.join(shown)}; "
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


#: Short command-line names of fields: ``--collector ray``, ``--ray-address HOST:PORT``.
CLI_ALIASES = {"collector": "collector.name", "ray_address": "collector.address"}


def resolve_path(path: str, cfg: TrainConfig | None = None) -> str:
    """The field path a command-line name stands for (``-`` or ``_``; mtrl 0.1's flat agent
    names moved to their sections). Raises ConfigError for unknown names, with the closest
    field."""
    path = path.replace("-", "_")
    path = CLI_ALIASES.get(path, path)
    paths = field_paths()
    if path in paths:
        return path
    moved = moved_path(path, cfg.agent.name if cfg is not None else "mtsac")
    if moved is not None:
        return moved
    import difflib

    close = difflib.get_close_matches(path, list(paths), n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown config field '{path}'{hint} (`mtrl presets PRESET` lists a "
                      "preset's fields)")


def set_override(cfg: TrainConfig, path: str, raw: str) -> None:
    """Apply a command-line override ``path=raw`` (path with '-' or '_'), parsing ``raw``
    according to the field's type."""
    path = resolve_path(path, cfg)
    paths = field_paths()
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
            try:
                return int(raw)  # exact, however large
            except ValueError:
                f = float(raw)  # 1e6
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
    if inner is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}={value!r} must be a number")
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
    """A config from YAML text (a ``config.yaml``). YAML is read with PyYAML's safe loader:
    tags such as ``!!python/object`` are refused, never constructed. Raises ConfigError with a
    one-line message for text that is not YAML or not a config."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_message(e)) from None
    return from_dict(TrainConfig, data)


def yaml_error_message(e: Exception) -> str:
    """One line for a PyYAML error: what is wrong and where (line, column)."""
    import re

    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = str(getattr(e, "problem", None) or e)
    tag = re.search(r"tag '([^']*)'", problem)
    if tag is not None and "constructor" in problem:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return (f"the YAML tag {name}{where} is not allowed: a config holds plain YAML only "
                "(mappings, lists, strings, numbers, booleans, null)")
    context = getattr(e, "context", None)
    text = f"{context}: {problem}" if context else problem
    return f"not valid YAML: {' '.join(text.split())}{where}"


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
    "log.wandb_mode",
    "checkpoint.every",
    "checkpoint.keep_last",
    "replay.save_with_checkpoint",
    "collector.address",
    "collector.max_restarts",
)


def diff(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two configs: {path: (a_value, b_value)}."""
    out = {}
    for path in field_paths():
        va, vb = get_path(a, path), get_path(b, path)
        if va != vb:
            out[path] = (va, vb)
    return out
