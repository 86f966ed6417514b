"""Multi-task synchronous advantage actor-critic (MT-A2C), optionally with PopArt.

A2C: the synchronous variant of A3C (Mnih et al. 2016, "Asynchronous Methods for Deep
Reinforcement Learning", Algorithm S3 / Sec. 4): ``N`` envs step in lockstep for ``n`` steps,
then one gradient step on the loss

    L = E[ −log π(a_t|s_t) · Â_t ]  +  c_v · E[ (G_t − V(s_t))² ]  −  c_e · E[ H[π(·|s_t)] ]

with λ-returns ``G_t = Â_t + V(s_t)`` and generalized advantages ``Â_t`` (Schulman et al. 2016,
Eq. 16; λ = 1 gives A3C's n-step returns), bootstrapping through time-limit truncations and
never through true terminals (:mod:`mtrl.data.rollout`). The value term is a plain squared error
(stable-baselines3 and OpenAI baselines use ``c_v = 0.5`` with it).

Multi-task: the network is conditioned on the task id (:mod:`mtrl.modules.actor_critic`), the
batch is task-stratified, and the loss is a vector ``L[k]`` of per-task means that a gradient
combiner (``mean`` by default, or PCGrad) turns into one update.

PopArt (Hessel et al. 2019, "Multi-task Deep Reinforcement Learning with PopArt", the
section on PopArt for actor-critic and its Eq. 9–11; the paper's sections are unnumbered):
the value head has one normalized output ``n_k`` per task, ``V_k = σ_k n_k + μ_k``. Each
update, in this order:

1. the λ-returns ``G`` are computed in reward units from the values stored while acting;
2. task ``k``'s statistics take its returns, ``(μ_k, σ_k) → (μ'_k, σ'_k)``, and the head is
   rescaled so that ``V`` is unchanged (van Hasselt et al. 2016, Algorithm 1);
3. value loss in normalized units: ``(n_k(s) − (G − μ'_k)/σ'_k)²``;
4. the policy gradient uses the *normalized* advantage of the paper,
   ``Ã_t = (G_t − μ'_k)/σ'_k − n'_k(s_t) = (G_t − V(s_t)) / σ'_k``,
   so every task's policy gradient has the same scale whatever its rewards, and Atari rewards
   need no clipping.

Distral (Teh et al. 2017; :mod:`mtrl.agents.distral`): with a :class:`~mtrl.agents.distral.Distral`
part the network's policy output is the task policy πi's column (``f_i``), π0 acts as the
shared distilled policy, and

* the task policies act; each step's reward gets the bonus ``(α/β) log π0(a|s) − (1/β) log πi(a|s)``
  (Eq. 2) before the λ-returns, so ``V`` and ``Â`` are those of the regularized objective;
* two columns: πi's logits are ``α h(s) + β f_i(s)`` with π0's logits ``h``;
* π0's loss is ``(α/β) KL(πi ‖ π0)`` with πi held fixed (its distillation gradient), per
  sample, divided by σ'_k with PopArt like the rest of task k's objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mtrl.agents.base import ActorCriticAgentParts, PolicyOutput, TaskIds, env_actions
from mtrl.agents.compiling import (
    UpdateCompiler,
    compile_blocker,
    note_blockers,
    resolve_compile_mode,
)
from mtrl.agents.distral import (
    DistilledPolicy,
    Distral,
    DistralHyperparams,
    Pi0Actor,
    reward_bonus,
    two_column_logits,
)
from mtrl.data.rollout import RolloutBatch
from mtrl.modules.actor_critic import ActorCritic
from mtrl.modules.cnn import NatureCNN
from mtrl.modules.distributions import (
    categorical_kl,
    categorical_log_prob,
    gaussian_kl,
    gaussian_log_prob,
)
from mtrl.modules.popart import PopArtUpdate, popart_update_
from mtrl.modules.routing import routed_nets
from mtrl.optim.combiners import Combiner, MeanCombiner


@dataclass
class A2CHyperparams:
    gamma: float = 0.99
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    grad_clip: float | None = 0.5


class MTA2C(ActorCriticAgentParts):
    """Multi-task A2C; see the module docstring. Receives a built :class:`ActorCritic` and its
    optimizer. ``update`` returns detached 0-dim tensors (no host sync)."""

    def __init__(
        self,
        net: ActorCritic,
        optim: torch.optim.Optimizer,
        hparams: A2CHyperparams,
        *,
        combiner: Combiner | None = None,
        distral: Distral | None = None,
        compile_mode: str = "off",
    ) -> None:
        self.net = net
        self.optim = optim
        self.hp = hparams
        self.distral = distral
        self.combiner = combiner or MeanCombiner()
        if distral is not None and distral.pi0.discrete != net.discrete:
            raise ValueError("π0 and the task policies need the same action type")
        self.combiner.watch(net if distral is None else nn.ModuleList([net, distral.pi0]))
        self.num_tasks = net.num_tasks
        self.discrete = net.discrete
        self.device = next(net.parameters()).device
        self._params: list[torch.Tensor] = list(net.parameters())
        if distral is not None:
            self._params += list(distral.pi0.parameters())
        self._last_kl: torch.Tensor | None = None
        self._routers = list(routed_nets(net))
        self._task_ids = TaskIds(self.device)
        self._compiler = UpdateCompiler(compile_mode, self.device)
        note_blockers(self._compiler, [(self.combiner, self._routers, "actor-critic")])

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
                policy_out = self._task_policy(self.net(obs_t, tid)[0], obs_t, tid, None)
            finally:
                self.net.train(was)
            action = self.net.mode(policy_out)
        else:
            policy_out = self._task_policy(self.net(obs_t, tid)[0], obs_t, tid, None)
            action = self.net.sample(policy_out, tid)
        return self.to_env(action)

    @torch.no_grad()
    def act_pi0(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False
                ) -> np.ndarray:
        """Env actions of the distilled policy π0 (Distral only)."""
        assert self.distral is not None
        obs_t = torch.as_tensor(obs, device=self.device)
        tid = self._task_ids(task_id)
        out = self.distral.pi0(obs_t, tid)
        if self.discrete:  # the task policies' categorical sampling, on π0's logits
            return self.to_env(self.net.mode(out) if deterministic else self.net.sample(out, tid))
        mean, log_std = out
        action = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return self.to_env(action)

    @torch.no_grad()
    def step(self, obs: torch.Tensor, task_id: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rollout step on device tensors: a sampled action, ``V(s)`` (reward units) and, with
        Distral, the reward bonus ``(α/β) log π0(a|s) − (1/β) log πi(a|s)`` (else None)."""
        policy_out, value_out = self.net(obs, task_id)
        value = self.net.unnormalize(value_out, task_id)
        if self.distral is None:
            return self.net.sample(policy_out, task_id), value, None
        pi0_out = self.distral.pi0(obs, task_id)
        policy_out = self._compose(policy_out, pi0_out)
        action = self.net.sample(policy_out, task_id)
        logp_task, _ = self.net.log_prob_entropy(policy_out, action, task_id)
        bonus = reward_bonus(logp_task, self._pi0_log_prob(pi0_out, action), self.distral.hp)
        return action, value, bonus

    def _compose(self, policy_out: torch.Tensor, pi0_out: Any) -> torch.Tensor:
        """The task policy's output: the task column, or ``α h + β f_i`` with two columns.

        The task column's network outputs ``β f_i`` (``f_i = policy_out / β``): the same
        family of policies, but β does not multiply the column's step size in logit space
        (docs/NOTES.md)."""
        assert self.distral is not None
        hp = self.distral.hp
        if hp.columns == 2:
            return two_column_logits(pi0_out, policy_out / hp.beta, hp)
        return policy_out

    def _task_policy(self, policy_out: torch.Tensor, obs: torch.Tensor, task_id: torch.Tensor,
                     per_task: int | None) -> torch.Tensor:
        if self.distral is None or self.distral.hp.columns == 1:
            return policy_out
        return self._compose(policy_out, self.distral.pi0(obs, task_id, per_task))

    def _pi0_log_prob(self, pi0_out: Any, action: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return categorical_log_prob(pi0_out, action)
        mean, log_std = pi0_out
        return gaussian_log_prob(action, mean, log_std)

    def _pi0_kl(self, policy_out: torch.Tensor, pi0_out: Any, task_id: torch.Tensor
                ) -> torch.Tensor:
        """``KL(πi ‖ π0)`` per sample with πi held fixed (gradient reaches π0 only)."""
        if self.discrete:
            return categorical_kl(policy_out.detach(), pi0_out)
        mean0, log_std0 = pi0_out
        return gaussian_kl(policy_out.detach(), self.net.log_std(task_id).detach(),
                           mean0, log_std0)

    # What a distillation teacher reads (mtrl.teachers.MtrlTeacher): logits, or an unsquashed
    # Gaussian; the CNN torso's output as features when there is one.
    policy_squashed = False

    @property
    def policy_feature_dim(self) -> int | None:
        torso = self.net.torso
        return torso.out_dim if isinstance(torso, NatureCNN) else None

    @torch.no_grad()
    def policy_output(self, obs: torch.Tensor, task_id: torch.Tensor) -> PolicyOutput:
        """The task policies' logits (or Gaussian mean and log-std) for device tensors, with
        Distral's two columns composed with π0's logits."""
        h = self.net.features(obs)
        policy_out = self._task_policy(self.net.policy(h, task_id), obs, task_id, None)
        features = h if self.policy_feature_dim is not None else None
        if self.discrete:
            return PolicyOutput(logits=policy_out, features=features)
        return PolicyOutput(mean=policy_out, log_std=self.net.log_std(task_id), features=features)

    def policy_modules(self) -> list[nn.Module]:
        """The modules ``act`` uses (frozen when the agent serves as a teacher)."""
        return [self.net] + ([self.distral.pi0] if self.distral is not None else [])

    def extra_policies(self) -> dict[str, Pi0Actor]:
        """Policies evaluated besides the task policies: Distral's π0 (``"pi0"``)."""
        return {} if self.distral is None else {"pi0": Pi0Actor(self)}

    @torch.no_grad()
    def value(self, obs: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        return self.net.value(obs, task_id)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        """Device actions → what the env takes: int64 indices, or Gaussian samples clipped to
        the policy space [-1, 1] (the log-probability is of the unclipped sample)."""
        return env_actions(action, self.discrete)

    # ------------------------------------------------------------------ learning
    def targets(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Value targets and policy-gradient advantages, each ``[B]``, after the PopArt
        statistics step (steps 1, 2 and 4 of the module docstring). Without PopArt:
        ``(G, G − V)``. With PopArt: ``((G − μ')/σ', (G − V)/σ')`` — this *updates* the
        statistics and rescales the value head."""
        target, adv, _ = self._targets_and_scale(batch)
        return target, adv

    def _targets_and_scale(self, batch: RolloutBatch
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return rollout_targets(self.net, batch)

    def losses(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Per-sample and per-task loss terms of one update (runs the PopArt statistics step
        when PopArt is on; no parameter update otherwise)."""
        return self._loss_terms(batch, *self._targets_phase(batch))

    @torch.no_grad()
    def _targets_phase(self, batch: RolloutBatch
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`_targets_and_scale` without gradient: a phase of its own in compiled updates,
        since PopArt rescales the value head in place, which must not happen inside the graph
        that differentiates it."""
        return self._targets_and_scale(batch)

    def _loss_terms(self, batch: RolloutBatch, target: torch.Tensor, adv: torch.Tensor,
                    sigma: torch.Tensor | None) -> dict[str, torch.Tensor]:
        policy_out, value_out = self.net(batch.obs, batch.task_id, batch.per_task)
        pi0_out = None
        if self.distral is not None:
            pi0_out = self.distral.pi0(batch.obs, batch.task_id, batch.per_task)
            policy_out = self._compose(policy_out, pi0_out)
        log_prob, entropy = self.net.log_prob_entropy(policy_out, batch.action, batch.task_id)
        policy = -log_prob * adv.detach()
        value = (value_out - target).pow(2)
        total = policy + self.hp.vf_coef * value - self.hp.ent_coef * entropy
        t, n = batch.num_tasks, batch.per_task
        out = {
            "policy": policy,
            "value": value,
            "entropy": entropy,
            "advantage": adv,
            "target": target,
            "value_out": value_out,
        }
        if self.distral is not None:
            kl = self._pi0_kl(policy_out, pi0_out, batch.task_id)
            distill = self.distral.hp.kl_coef * kl
            if sigma is not None:
                distill = distill / sigma
            total = total + distill
            out["kl"] = kl
            out["distill"] = distill
        out["per_task"] = total.view(t, n).mean(1)
        return out

    def update(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """One gradient step from a finished rollout. With ``compile`` set, the loss and the
        optimizer step run compiled (:mod:`mtrl.agents.compiling`); the combiner's backward
        pass runs eagerly."""
        if batch.num_tasks != self.num_tasks:
            raise ValueError(f"batch has {batch.num_tasks} tasks, agent {self.num_tasks}")
        c = self._compiler
        c.step_begin()
        targets = c.run("targets", self._targets_phase, batch)
        out = c.run("loss", self._loss_terms, batch, *targets,
                    eager=compile_blocker(self.combiner, self._routers, "actor-critic"))
        self.optim.zero_grad(set_to_none=True)
        self.combiner.backward(out["per_task"], self._params)
        if self._routers:
            per_sample = (out["policy"] + self.hp.vf_coef * out["value"]
                          - self.hp.ent_coef * out["entropy"]).detach()
            total = torch.stack([r.router_loss(per_sample) for r in self._routers]).sum()
            if total.requires_grad:
                total.backward()
        metrics = c.own(c.run("step", self._step, out, batch))
        if self.distral is not None:
            self._last_kl = out["kl"].detach().view(batch.num_tasks, batch.per_task).mean(1)
        return metrics

    @property
    def compile_info(self) -> dict[str, Any]:
        """``agent.compile`` as it runs (:mod:`mtrl.agents.compiling`)."""
        return self._compiler.info()

    def _step(self, out: dict[str, torch.Tensor], batch: RolloutBatch
              ) -> dict[str, torch.Tensor]:
        """Gradient clipping, the optimizer step and the metrics of one update."""
        grad_norm = None
        if self.hp.grad_clip is not None:
            if self.distral is None:
                grad_norm = nn.utils.clip_grad_norm_(self._params, self.hp.grad_clip).detach()
            else:  # π0 and the task networks are clipped separately
                grad_norm = nn.utils.clip_grad_norm_(list(self.net.parameters()),
                                                     self.hp.grad_clip).detach()
                nn.utils.clip_grad_norm_(list(self.distral.pi0.parameters()), self.hp.grad_clip)
        self.optim.step()
        g, v = batch.returns, batch.value
        explained = 1.0 - (g - v).var() / g.var().clamp_min(1e-8)
        metrics = {
            "loss": out["per_task"].detach().mean(),
            "policy": out["policy"].detach().mean(),
            "value": out["value"].detach().mean(),
            "entropy": out["entropy"].detach().mean(),
            "value_mean": v.mean(),
            "return_mean": g.mean(),
            "explained_variance": explained,
        }
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        if self.distral is not None:
            metrics["distral_kl"] = out["kl"].detach().mean()
        return metrics

    def task_metrics(self) -> dict[str, torch.Tensor]:
        """The shared per-task values (PopArt statistics, policy std) and Distral's KL."""
        out = super().task_metrics()
        if self._last_kl is not None:
            out["distral/kl"] = self._last_kl
        return out

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        out = {
            "net": self.net.state_dict(),
            "optim": self.optim.state_dict(),
            "combiner": self.combiner.state_dict(),
        }
        if self.distral is not None:
            out["distral"] = self.distral.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (self.distral is None) != ("distral" not in state):
            raise ValueError("checkpoint and agent disagree on Distral (π0 present in one only)")
        self.net.load_state_dict(state["net"])
        if self.distral is not None:
            self.distral.load_state_dict(state["distral"])
        self.optim.load_state_dict(state["optim"])
        self.combiner.load_state_dict(state["combiner"])
        self._task_ids.clear()

    def train(self) -> None:
        self.net.train()
        if self.distral is not None:
            self.distral.pi0.train()

    def eval(self) -> None:
        self.net.eval()
        if self.distral is not None:
            self.distral.pi0.eval()


def rollout_targets(net: ActorCritic, batch: RolloutBatch
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Value targets, policy-gradient advantages and the per-sample PopArt scale σ' of a
    rollout (None without PopArt), shared by the on-policy agents.

    Without PopArt: ``(G, G − V, None)``. With PopArt (Hessel et al. 2019, Eq. 9–11): the
    statistics take each task's λ-returns and the value head is rescaled to preserve its
    outputs (van Hasselt et al. 2016, Algorithm 1), then ``((G − μ')/σ', (G − V)/σ', σ')`` —
    this *updates* the statistics."""
    g = batch.returns
    adv = batch.advantage
    popart = net.popart
    if popart is None:
        return g, adv, None
    g_tasks = g.view(batch.num_tasks, batch.per_task)
    reward = None if batch.reward is None else batch.reward.view(batch.num_tasks,
                                                                 batch.per_task)
    update = popart_statistics_step(net, g_tasks, reward)
    target = popart.normalize(g_tasks).view(-1)
    sigma = update.new_sigma.repeat_interleave(batch.per_task)
    return target, adv / sigma, sigma


def popart_statistics_step(net: ActorCritic, targets: torch.Tensor,
                           reward: torch.Tensor | None) -> PopArtUpdate:
    """PopArt's statistics step for an actor-critic with per-task value outputs (Hessel et al.
    2019, Sec. 3; van Hasselt et al. 2016, Algorithm 1): the statistics of task ``k`` take row
    ``k`` of the task-stratified value targets ``targets [T, n]`` (reward units: λ-returns for
    A2C/PPO, V-trace targets for IMPALA), and the value head is rescaled so that every
    unnormalized output is unchanged. Returns the statistics before and after.

    A task whose targets carry no scale information keeps its statistics: targets all equal
    (debiased statistics would set σ to its floor and scale the value head by 1/σ_min), or,
    when the rollout's ``reward [T, n]`` is given, a rollout without any reward, whose targets
    are only bootstraps of the value function (docs/NOTES.md)."""
    popart, head = net.popart, net.value_head
    assert popart is not None and head is not None
    informative = targets.amax(1) > targets.amin(1)
    if reward is not None:
        informative = informative & (reward.abs().amax(1) > 0)
    return popart_update_(popart, targets, [head], informative)


class RMSpropTF(torch.optim.RMSprop):
    """RMSprop whose running mean of squared gradients starts at 1, as TensorFlow's RMSProp
    (the optimizer of the original A3C/A2C implementations; stable-baselines3 offers it as
    ``RMSpropTFLike`` for Atari). PyTorch's starts at 0, so its first steps are about
    ``lr / sqrt(1 − α)`` = 10·lr along the sign of every gradient (docs/NOTES.md)."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(p)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(p)


def build_mta2c(
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
    lr: float = 7e-4,
    optimizer: str = "rmsprop",
    optim_eps: float = 1e-5,
    rmsprop_alpha: float = 0.99,
    hparams: A2CHyperparams | None = None,
    combiner: Combiner | None = None,
    distral: DistralHyperparams | None = None,
    pi0_hidden: list[int] | None = None,
    pi0_task_input: bool = False,
    compile_mode: str = "off",
    device: torch.device | str = "cpu",
) -> MTA2C:
    """Network, PopArt statistics and optimizer of an MT-A2C agent. RMSprop defaults follow
    Mnih et al. 2016 / stable-baselines3 (α = 0.99, ε = 1e-5, lr 7e-4).

    PopArt statistics are debiased (the first rollout sets them, later ones move them by β;
    docs/NOTES.md). Tasks whose returns carry no scale information in a rollout are left out
    of the statistics update (:func:`rollout_targets`).

    ``distral``: also build Distral's π0 (hidden sizes ``pi0_hidden``, default
    ``actor_hidden``), trained by the same optimizer. ``compile_mode``: ``agent.compile``
    (:mod:`mtrl.agents.compiling`; with ``graphs`` on CUDA the optimizer is built
    ``capturable`` where it supports it)."""
    from mtrl.modules.popart import PopArtStatistics

    stats = PopArtStatistics(num_tasks, beta=popart_beta) if popart else None
    net = ActorCritic(
        obs_shape, num_tasks, num_actions=num_actions, action_dim=action_dim,
        actor_hidden=actor_hidden, critic_hidden=critic_hidden, actor_arch=actor_arch,
        critic_arch=critic_arch, arch_cfg=arch_cfg, torso=torso, popart=stats,
    ).to(device)
    part = None
    params = list(net.parameters())
    if distral is not None:
        pi0 = DistilledPolicy(
            obs_shape, num_tasks, num_actions=num_actions, action_dim=action_dim,
            hidden=list(actor_hidden if pi0_hidden is None else pi0_hidden),
            task_input=pi0_task_input, arch_cfg=arch_cfg,
        ).to(device)
        part = Distral(pi0, distral)
        params += list(pi0.parameters())
    opt = make_optimizer(optimizer, params, lr=lr, eps=optim_eps, rmsprop_alpha=rmsprop_alpha,
                         capturable=resolve_compile_mode(compile_mode, device)[0] == "graphs")
    return MTA2C(net, opt, hparams or A2CHyperparams(), combiner=combiner, distral=part,
                 compile_mode=compile_mode)


def make_optimizer(name: str, params: Sequence[torch.Tensor], *, lr: float, eps: float,
                   rmsprop_alpha: float, capturable: bool = False) -> torch.optim.Optimizer:
    """The single optimizer of an on-policy actor-critic: ``rmsprop`` (PyTorch's),
    ``rmsprop-tf`` (:class:`RMSpropTF`, mean square starting at 1) or ``adam``.
    ``capturable``: step counts on the device, for CUDA graph capture (``rmsprop-tf`` keeps its
    pre-initialized host step count and is compiled without capture)."""
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=rmsprop_alpha, eps=eps,
                                   capturable=capturable)
    if name == "rmsprop-tf":
        return RMSpropTF(params, lr=lr, alpha=rmsprop_alpha, eps=eps)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=eps, capturable=capturable)
    raise ValueError(f"unknown optimizer {name!r}; allowed: rmsprop, rmsprop-tf, adam")
