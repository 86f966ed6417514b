"""Multi-task IMPALA learner: the V-trace actor-critic, with PopArt.

IMPALA (Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
Actor-Learner Architectures"): actors act with a behaviour policy μ that may lag the learner's
policy π and send unrolls of ``n`` steps; the learner corrects for the lag with **V-trace**
(Sec. 4.1, Eq. 1)

    v_s = V(x_s) + Σ_{t=s}^{s+n−1} γ^{t−s} (Π_{i=s}^{t−1} c_i) δ_t V,
    δ_t V = ρ_t (r_t + γ V(x_{t+1}) − V(x_t)),
    ρ_t = min(ρ̄, π(a_t|x_t) / μ(a_t|x_t)),     c_i = λ min(c̄, π(a_i|x_i) / μ(a_i|x_i)),

with λ as in Remark 2 (λ = 1: Eq. 1), computed backwards by the recursion of Remark 1,
``v_s = V(x_s) + δ_s V + γ c_s (v_{s+1} − V(x_{s+1}))`` (:func:`vtrace`). On-policy (π = μ,
c̄ >= 1, λ = 1) ``v_s`` is the n-step return (Eq. 2).

The V-trace actor-critic (Sec. 4.2), per sample:

* policy: ``−ρ_s log π(a_s|x_s) · (r_s + γ v_{s+1} − V(x_s))`` (the advantage held fixed);
* value: ``c_v · ½ (v_s − V(x_s))²``, whose gradient ``c_v (v_s − V(x_s)) ∇V`` is the paper's
  direction scaled by its "baseline loss scaling" c_v (the reference implementation's
  ``0.5 · Σ (v_s − V)²``);
* entropy bonus: ``−c_e H[π(·|x_s)]``.

Each update the learner's current network evaluates ``π(a_s|x_s)`` and ``V(x_s)`` on the whole
unroll and ``V`` of the observation after it (the bootstrap value), as IMPALA's learner does;
the acting policy's ``log μ(a_s|x_s)`` comes with the rollout. All targets are computed under
``no_grad`` on the learner's device.

Episode ends inside an unroll (mtrl's convention, :mod:`mtrl.data.rollout`): a true terminal
has discount 0 (no bootstrap, trace cut); a time-limit truncation bootstraps from the value of
the episode's real last observation (stored while acting, as for GAE:
:func:`~mtrl.data.rollout.bootstrap_values`) and also cuts the trace, since the next row of the
unroll belongs to a new episode.

Multi-task: the network is conditioned on the task id (:class:`~mtrl.modules.actor_critic.
ActorCritic`), the rows of an update are task-stratified and the loss is a vector of per-task
means that a gradient combiner turns into one update (as MT-A2C). The paper sums its losses
over batch and time (the note under its Table D.1); mtrl averages, which rescales the gradient
by 1/(batch × unroll) — the ε of RMSProp and the gradient-clipping threshold are converted
accordingly in the presets.

**PopArt** (Hessel et al. 2019, "Multi-task Deep Reinforcement Learning with PopArt": the
scale-invariant updates of its multi-task IMPALA agent; the paper's sections are unnumbered,
AAAI style): the value head has one normalized output ``n_k`` per task,
``V_k = σ_k n_k + μ_k``. Each update, in this order:

1. V-trace targets ``v_s`` and advantages in reward units, from ``V = σ n + μ``;
2. task ``k``'s statistics take its V-trace targets, ``(μ_k, σ_k) → (μ'_k, σ'_k)``, and the head
   is rescaled so that ``V`` is unchanged (van Hasselt et al. 2016, Algorithm 1;
   :func:`mtrl.agents.a2c.popart_statistics_step`, shared with MT-A2C and MT-PPO);
3. value loss in normalized units: ``½ ((v_s − μ'_k)/σ'_k − n'_k(x_s))²``;
4. policy gradient with the paper's normalized advantage
   ``ρ_s ((r_s + γ v_{s+1} − μ'_k)/σ'_k − n'_k(x_s)) = ρ_s (r_s + γ v_{s+1} − V(x_s)) / σ'_k``
   (the equality because step 2 preserves ``V``), so every task's policy gradient has the same
   scale whatever its rewards, and rewards need no clipping.

In process (:class:`VTraceDataPath` with the in-process collector) the rollout is collected by
the current policy, so π = μ up to floating-point differences between acting and learning,
ρ = c = 1 and V-trace reduces to n-step returns. On Ray env runners (``--collector ray``,
:mod:`mtrl.collect.ray`) the runners are IMPALA's actors: they act with the weights of the
learner's last publish (``collector.publish_every`` updates apart) and send unrolls with the
behaviour log-probabilities, the sampled actions, the observation after the unroll and, for
episodes cut by a time limit, the value of the real last observation as the actor computed it
(the learner never sees that observation); all go through the same :meth:`MTIMPALA.update`.
Values computed while acting are not used: the learner evaluates ``V`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from mtrl.agents.a2c import make_optimizer, popart_statistics_step
from mtrl.agents.base import (
    ActorCriticAgentParts,
    DataPath,
    EnvSpec,
    Iteration,
    PolicyOutput,
    TaskIds,
    env_actions,
)
from mtrl.agents.onpolicy import RolloutDataPath
from mtrl.agents.specs import OPTIMIZERS, _actor_critic_args, _check_joint_loss, _check_torso
from mtrl.collect.base import Collector
from mtrl.config import AgentConfig, TrainConfig, check_positive, choice_message
from mtrl.data.rollout import RolloutStorage, Trajectory
from mtrl.errors import ConfigError
from mtrl.modules.actor_critic import ActorCritic
from mtrl.modules.cnn import NatureCNN
from mtrl.modules.routing import routed_nets
from mtrl.optim.combiners import Combiner, MeanCombiner
from mtrl.registry import register_agent

# ---------------------------------------------------------------------------------------------
# V-trace


class VTraceReturns(NamedTuple):
    """What :func:`vtrace` returns, each ``[T, N]``: the targets ``v_s``, the policy-gradient
    advantages ``ρ_s (r_s + γ v_{s+1} − V(x_s))`` and the truncated weights ``ρ_s``."""

    vs: torch.Tensor
    pg_advantages: torch.Tensor
    rho: torch.Tensor


@torch.no_grad()
def vtrace(
    behaviour_log_prob: torch.Tensor,
    target_log_prob: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discounts: torch.Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    lambda_: float = 1.0,
    *,
    truncated: torch.Tensor | None = None,
    truncation_value: torch.Tensor | None = None,
) -> VTraceReturns:
    """V-trace targets and policy-gradient advantages (Espeholt et al. 2018, Sec. 4.1 Eq. 1,
    Remarks 1 and 2; Sec. 4.2) of a time-major unroll of ``N`` envs, all ``[T, N]`` but
    ``bootstrap_value [N]``:

    * ``behaviour_log_prob`` / ``target_log_prob``: ``log μ(a_t|x_t)`` of the policy that acted,
      ``log π(a_t|x_t)`` of the policy being learned;
    * ``values``: ``V(x_t)``; ``bootstrap_value``: ``V(x_T)`` of the observation after the
      unroll;
    * ``discounts``: ``γ_t``, i.e. γ, and 0 where the episode *terminated* at step ``t``;
    * ``truncated`` (bool) / ``truncation_value``: where an episode was cut by a time limit at
      step ``t``, its next value is ``truncation_value[t]`` (the value of its real last
      observation, as in :func:`mtrl.data.rollout.bootstrap_values`) instead of ``V(x_{t+1})``
      (which is a new episode's), and the trace is cut there.

    With ``V̂_{t+1}`` the next value so defined and ``ĉ_t = c_t`` except 0 at truncations::

        ρ_t = min(ρ̄, π/μ),   c_t = λ min(c̄, π/μ),   δ_t = ρ_t (r_t + γ_t V̂_{t+1} − V(x_t)),
        v_t − V(x_t) = δ_t + γ_t ĉ_t (v_{t+1} − V(x_{t+1}))      (Remark 1, v_T = V(x_T)),
        A_t = ρ_t (r_t + γ_t v̂_{t+1} − V(x_t))                  (Sec. 4.2),

    where ``v̂_{t+1}`` is ``v_{t+1}`` (``V(x_T)`` after the last step) or, at a truncation,
    ``truncation_value[t]``. Runs on the inputs' device, one vectorized step per time step."""
    if truncated is not None and truncation_value is None:
        raise ValueError("truncated needs truncation_value")
    ratio = (target_log_prob - behaviour_log_prob).exp()
    rho = ratio.clamp(max=rho_bar)
    cs = lambda_ * ratio.clamp(max=c_bar)
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    if truncated is not None:
        assert truncation_value is not None
        next_values = torch.where(truncated, truncation_value, next_values)
        cs = cs.masked_fill(truncated, 0.0)
    deltas = rho * (rewards + discounts * next_values - values)
    decay = discounts * cs
    vs_minus_v = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + decay[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values
    vs_next = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    if truncated is not None:
        assert truncation_value is not None
        vs_next = torch.where(truncated, truncation_value, vs_next)
    pg_advantages = rho * (rewards + discounts * vs_next - values)
    return VTraceReturns(vs, pg_advantages, rho)


def _task_major(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, ...]`` with envs ordered by task → ``[N·T, ...]``: each env's steps in order,
    envs task by task (the rows of a task-stratified batch)."""
    return x.transpose(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _time_major(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Inverse of :func:`_task_major` for ``[N·T]``: ``[T, N]``."""
    return x.view(-1, steps).transpose(0, 1)


# ---------------------------------------------------------------------------------------------
# The learner


@dataclass
class IMPALAHyperparams:
    gamma: float = 0.99
    rho_bar: float = 1.0
    c_bar: float = 1.0
    vtrace_lambda: float = 1.0
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    grad_clip: float | None = None


class MTIMPALA(ActorCriticAgentParts):
    """Multi-task IMPALA learner; see the module docstring. Receives a built
    :class:`ActorCritic` and its optimizer. ``update`` takes a time-major
    :class:`~mtrl.data.rollout.Trajectory` and returns detached 0-dim tensors (no host sync)."""

    policy_squashed = False

    def __init__(self, net: ActorCritic, optim: torch.optim.Optimizer,
                 hparams: IMPALAHyperparams, *, combiner: Combiner | None = None) -> None:
        self.net = net
        self.optim = optim
        self.hp = hparams
        self.combiner = combiner or MeanCombiner()
        self.combiner.watch(net)
        self.num_tasks = net.num_tasks
        self.discrete = net.discrete
        self.device = next(net.parameters()).device
        self._params: list[torch.Tensor] = list(net.parameters())
        self._routers = list(routed_nets(net))
        self._task_ids = TaskIds(self.device)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Env actions for a batch of observations (evaluation, generic callers)."""
        obs_t = torch.as_tensor(obs, device=self.device)
        tid = self._task_ids(task_id)
        if deterministic:
            was = self.net.training
            self.net.eval()
            try:
                action = self.net.mode(self.net(obs_t, tid)[0])
            finally:
                self.net.train(was)
        else:
            action = self.net.sample(self.net(obs_t, tid)[0], tid)
        return self.to_env(action)

    @torch.no_grad()
    def step(self, obs: torch.Tensor, task_id: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, None, torch.Tensor]:
        """Rollout step on device tensors: a sampled action, ``V(s)`` (reward units), no reward
        bonus, and the behaviour log-probability ``log μ(a|s)`` V-trace needs."""
        policy_out, value_out = self.net(obs, task_id)
        action = self.net.sample(policy_out, task_id)
        log_prob, _ = self.net.log_prob_entropy(policy_out, action, task_id)
        return action, self.net.unnormalize(value_out, task_id), None, log_prob

    @torch.no_grad()
    def value(self, obs: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        return self.net.value(obs, task_id)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        """Device actions → env actions: int64 indices, or Gaussian samples clipped to the
        policy space [-1, 1] (log-probabilities are of the unclipped sample)."""
        return env_actions(action, self.discrete)

    # What a distillation teacher reads (mtrl.teachers.MtrlTeacher).
    @property
    def policy_feature_dim(self) -> int | None:
        torso = self.net.torso
        return torso.out_dim if isinstance(torso, NatureCNN) else None

    @torch.no_grad()
    def policy_output(self, obs: torch.Tensor, task_id: torch.Tensor) -> PolicyOutput:
        h = self.net.features(obs)
        policy_out = self.net.policy(h, task_id)
        features = h if self.policy_feature_dim is not None else None
        if self.discrete:
            return PolicyOutput(logits=policy_out, features=features)
        return PolicyOutput(mean=policy_out, log_std=self.net.log_std(task_id), features=features)

    def policy_modules(self) -> list[nn.Module]:
        return [self.net]

    # ------------------------------------------------------------------ learning
    def losses(self, traj: Trajectory) -> dict[str, torch.Tensor]:
        """Per-sample terms (rows task-major, ``[B]``) and the per-task loss of one update on
        ``traj``: the learner's forward pass, V-trace and, with PopArt, the statistics step
        (which rescales the value head; steps 1–4 of the module docstring)."""
        net, hp = self.net, self.hp
        steps = traj.reward.shape[0]
        k = traj.num_tasks
        if k != self.num_tasks:
            raise ValueError(f"trajectory has {k} tasks, agent {self.num_tasks}")
        per_task = traj.envs_per_task * steps
        tid = traj.task_id.repeat_interleave(steps)
        h = net.features(_task_major(traj.obs[:-1]))
        policy_out = net.policy(h, tid, per_task)
        log_prob, entropy = net.log_prob_entropy(policy_out, _task_major(traj.action), tid)
        hv: torch.Tensor | None = None
        if net.value_head is not None:
            hv = net.value_features(h, tid, per_task)
            value_out = net.value_head(hv, tid)
        else:
            assert net.value_net is not None
            value_out = net.value_net(h, tid, per_task).squeeze(-1)
        with torch.no_grad():
            v = net.unnormalize(value_out.detach(), tid)  # V(x_s) in reward units
            vt = vtrace(
                traj.behaviour_log_prob, _time_major(log_prob.detach(), steps), traj.reward,
                _time_major(v, steps), net.value(traj.obs[-1], traj.task_id),
                hp.gamma * (~traj.terminated).to(traj.reward.dtype),
                hp.rho_bar, hp.c_bar, hp.vtrace_lambda,
                truncated=traj.truncated, truncation_value=traj.truncation_value,
            )
        vs, adv = _task_major(vt.vs), _task_major(vt.pg_advantages)
        target = vs
        if net.popart is not None:
            assert hv is not None and net.value_head is not None
            vs_tasks = vs.view(k, per_task)
            update = popart_statistics_step(net, vs_tasks,
                                            _task_major(traj.reward).view(k, per_task))
            target = net.popart.normalize(vs_tasks).view(-1)
            adv = adv / update.new_sigma.repeat_interleave(per_task)
            value_out = net.value_head(hv, tid)  # the rescaled head: n'(x_s)
        policy = -log_prob * adv
        value = 0.5 * (value_out - target).pow(2)
        total = policy + hp.vf_coef * value - hp.ent_coef * entropy
        return {
            "policy": policy, "value": value, "entropy": entropy, "total": total,
            "advantage": adv, "target": target, "value_out": value_out, "vs": vs,
            "v": v, "rho": _task_major(vt.rho),
            "ratio": (log_prob.detach() - _task_major(traj.behaviour_log_prob)).exp(),
            "per_task": total.view(k, per_task).mean(1),
        }

    def update(self, traj: Trajectory) -> dict[str, torch.Tensor]:
        """One gradient step from an unroll (collected by this policy or a lagged one)."""
        out = self.losses(traj)
        self.optim.zero_grad(set_to_none=True)
        self.combiner.backward(out["per_task"], self._params)
        if self._routers:
            per_sample = out["total"].detach()
            total = torch.stack([r.router_loss(per_sample) for r in self._routers]).sum()
            if total.requires_grad:
                total.backward()
        grad_norm = None
        if self.hp.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self._params, self.hp.grad_clip).detach()
        self.optim.step()
        vs, v = out["vs"], out["v"]
        metrics = {
            "loss": out["per_task"].detach().mean(),
            "policy": out["policy"].detach().mean(),
            "value": out["value"].detach().mean(),
            "entropy": out["entropy"].detach().mean(),
            "value_mean": v.mean(),
            "return_mean": vs.mean(),
            "explained_variance": 1.0 - (vs - v).var() / vs.var().clamp_min(1e-8),
            "rho_mean": out["rho"].mean(),
            "rho_clipped": (out["ratio"] > self.hp.rho_bar).float().mean(),
        }
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        return metrics



def build_mtimpala(
    *,
    obs_shape: tuple[int, ...],
    num_tasks: int,
    num_actions: int | None = None,
    action_dim: int | None = None,
    actor_hidden: list[int],
    critic_hidden: list[int],
    actor_arch: str = "mlp",
    critic_arch: str = "mlp",
    arch_cfg: object | None = None,
    torso: str = "auto",
    popart: bool = True,
    popart_beta: float = 3e-4,
    lr: float = 6e-4,
    optimizer: str = "rmsprop-tf",
    optim_eps: float = 1.5625e-4,
    rmsprop_alpha: float = 0.99,
    hparams: IMPALAHyperparams | None = None,
    combiner: Combiner | None = None,
    device: torch.device | str = "cpu",
) -> MTIMPALA:
    """Network (:class:`ActorCritic`), PopArt statistics (β = 3e-4 as Hessel et al. 2019) and
    optimizer of an MT-IMPALA learner; RMSProp defaults as :class:`mtrl.config.IMPALAConfig`."""
    from mtrl.modules.popart import PopArtStatistics

    stats = PopArtStatistics(num_tasks, beta=popart_beta) if popart else None
    net = ActorCritic(
        obs_shape, num_tasks, num_actions=num_actions, action_dim=action_dim,
        actor_hidden=actor_hidden, critic_hidden=critic_hidden, actor_arch=actor_arch,
        critic_arch=critic_arch, arch_cfg=arch_cfg, torso=torso, popart=stats,
    ).to(device)
    opt = make_optimizer(optimizer, list(net.parameters()), lr=lr, eps=optim_eps,
                         rmsprop_alpha=rmsprop_alpha)
    return MTIMPALA(net, opt, hparams or IMPALAHyperparams(), combiner=combiner)


# ---------------------------------------------------------------------------------------------
# Data path and registration


class VTraceDataPath(RolloutDataPath):
    """The data path of :class:`MTIMPALA`: a rollout of ``n_steps`` vector steps handed to the
    learner as a time-major :class:`~mtrl.data.rollout.Trajectory`; the learner computes its own
    V-trace targets.

    * In process (:class:`~mtrl.collect.VectorCollector`), the rollout of
      :class:`~mtrl.agents.onpolicy.RolloutDataPath`: the current policy acts and each step is
      recorded as it is taken (behaviour log-probabilities, values of truncated episodes' last
      observations).
    * From remote actors (``remote_rollouts``: :class:`~mtrl.collect.ray.RayCollector`), the
      unrolls the runners took with the weights of the last publish (IMPALA's actors): the
      chunk carries ``log μ(a|s)``, the sampled actions, the truncation values and the
      observation after the unroll (:attr:`~mtrl.collect.base.Transitions.extras`), written
      into the storage in one copy (:meth:`~mtrl.data.rollout.RolloutStorage.fill`). V-trace's
      ρ and c correct for the lag between those weights and the learner's."""

    remote_rollouts = True

    def iterate(self, collector: Collector, vec_step: int) -> Iteration:
        storage = self.storage
        tr = collector.collect(self, storage.num_steps)
        if storage.step == 0:  # nothing was observed here: a remote actor's unroll
            if tr.last_obs is None or "log_prob" not in tr.extras:
                raise RuntimeError(f"{type(collector).__name__} returned transitions without "
                                   "the behaviour log-probabilities V-trace needs")
            storage.fill(obs=tr.obs, last_obs=tr.last_obs, action=tr.extras["sample"],
                         log_prob=tr.extras["log_prob"], reward=tr.reward,
                         terminated=tr.terminated, truncated=tr.truncated,
                         truncation_value=tr.extras["truncation_value"])
        metrics = self.agent.update(self.storage.trajectory())
        self.storage.after_update()
        return Iteration(tr, [metrics])


def impala_path(agent: Any, cfg: TrainConfig, env: EnvSpec, device: torch.device) -> DataPath:
    storage = RolloutStorage(
        cfg.agent.impala.n_steps, env.task_ids, env.obs_shape, obs_dtype=env.obs_dtype,
        action_shape=() if env.discrete else (env.action_dim,), discrete=env.discrete,
        device=device,
    )
    # gamma and gae_lambda of the base path are unused: the learner computes V-trace targets.
    return VTraceDataPath(agent, storage, gamma=cfg.agent.gamma, gae_lambda=1.0)


def build_impala(cfg: AgentConfig, *, obs_space: gym.Space[Any], action_space: gym.Space[Any],
                 num_tasks: int, device: torch.device) -> Any:
    c = cfg.impala
    return build_mtimpala(
        **_actor_critic_args(cfg, obs_space, action_space, num_tasks),
        lr=c.lr, optimizer=c.optimizer, optim_eps=c.optim_eps, rmsprop_alpha=c.rmsprop_alpha,
        hparams=IMPALAHyperparams(gamma=cfg.gamma, rho_bar=c.rho_bar, c_bar=c.c_bar,
                                  vtrace_lambda=c.vtrace_lambda, ent_coef=c.ent_coef,
                                  vf_coef=c.vf_coef, grad_clip=cfg.grad_clip),
        device=device,
    )


def _check_impala(cfg: TrainConfig, num_tasks: int) -> None:
    c = cfg.agent.impala
    for name in ("n_steps", "rho_bar", "c_bar", "vf_coef", "lr", "optim_eps"):
        check_positive(f"agent.impala.{name}", getattr(c, name))
    if c.c_bar > c.rho_bar:
        raise ConfigError(f"agent.impala.c_bar={c.c_bar} must be <= agent.impala.rho_bar="
                          f"{c.rho_bar} (Espeholt et al. 2018 assume ρ̄ >= c̄)")
    if not 0.0 <= c.vtrace_lambda <= 1.0:
        raise ConfigError(f"agent.impala.vtrace_lambda={c.vtrace_lambda!r} must be in [0, 1]")
    check_positive("agent.impala.ent_coef", c.ent_coef, allow_zero=True)
    if c.optimizer not in OPTIMIZERS:
        raise ConfigError(choice_message("agent.impala.optimizer", c.optimizer, OPTIMIZERS))
    if not 0.0 < c.rmsprop_alpha < 1.0:
        raise ConfigError(f"agent.impala.rmsprop_alpha={c.rmsprop_alpha!r} must be in (0, 1)")
    _check_torso(cfg)
    _check_joint_loss(cfg)


register_agent("mtimpala", build_impala, data_path=impala_path, check=_check_impala,
               on_policy=True, sections=("impala",), remote_rollouts=True)
