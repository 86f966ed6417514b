"""Multi-task proximal policy optimization (MT-PPO), optionally with PopArt.

PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms"): after each rollout of
``n_steps`` vector steps, ``epochs`` passes over it in ``minibatches`` minibatches, each a
gradient step on

    L = E[ −min(r_t Â_t, clip(r_t, 1 − ε, 1 + ε) Â_t) ] + c_v · L_V − c_e · E[ H[π(·|s_t)] ]

(Eq. 7 with the combined objective of Eq. 9), where ``r_t = π(a_t|s_t) / π_old(a_t|s_t)`` is
the ratio to the policy that acted (its log-probabilities are stored with the rollout) and
``Â_t`` the GAE(λ) advantage (Schulman et al. 2016, Eq. 16) computed once per rollout from the
values stored while acting (:mod:`mtrl.data.rollout`). The value loss is ``(V(s) − G)²`` or,
with ``clip_value = c``, ``max((V − G)², (V_old + clip(V − V_old, −c, c) − G)²)`` (the clipped
value objective of the OpenAI baselines implementation, also in Meta-World+'s MTPPO).

Multi-task:

* the network is conditioned on the task id (:class:`~mtrl.modules.actor_critic.ActorCritic`);
* minibatches are task-stratified: every task's rows of the rollout are shuffled and split into
  ``minibatches`` equal parts, and minibatch ``m`` holds part ``m`` of every task, task-major
  (when the rows per task are not a multiple of ``minibatches``, each epoch leaves out the
  remainder, a different random few rows of every task);
* with ``normalize_advantage`` the advantages are standardized per task within each minibatch,
  so every task's policy gradient has unit scale whatever its rewards;
* the loss is a vector of per-task means that a gradient combiner turns into one update;
* with PopArt (Hessel et al. 2019) the statistics take each task's λ-returns once per
  rollout, before the epochs, with the value head rescaled to preserve its outputs; the value
  loss is in normalized units (targets ``(G − μ')/σ'``, old values ``(V_old − μ')/σ'``) and the
  advantages are ``(G − V)/σ'``, :func:`mtrl.agents.a2c.rollout_targets`.

With ``target_kl`` the epochs of a rollout stop early once the approximate KL divergence
``E[(r − 1) − log r]`` between the acting and the current policy exceeds it (this reads one
number from the device per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mtrl.agents.a2c import rollout_targets
from mtrl.agents.base import ActorCriticAgentParts, PolicyOutput, TaskIds, env_actions
from mtrl.agents.compiling import (
    UpdateCompiler,
    compile_blocker,
    note_blockers,
    resolve_compile_mode,
)
from mtrl.data.rollout import RolloutBatch
from mtrl.modules.actor_critic import ActorCritic
from mtrl.modules.cnn import NatureCNN
from mtrl.modules.routing import routed_nets
from mtrl.optim.combiners import Combiner, MeanCombiner


@dataclass
class PPOHyperparams:
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_value: float | None = None
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    epochs: int = 4
    minibatches: int = 4
    normalize_advantage: bool = True
    target_kl: float | None = None
    grad_clip: float | None = 0.5


class MTPPO(ActorCriticAgentParts):
    """Multi-task PPO; see the module docstring. Receives a built :class:`ActorCritic` and its
    optimizer. ``update`` returns detached 0-dim tensors (no host sync unless ``target_kl``)."""

    policy_squashed = False

    def __init__(self, net: ActorCritic, optim: torch.optim.Optimizer, hparams: PPOHyperparams,
                 *, combiner: Combiner | None = None, compile_mode: str = "off") -> None:
        if hparams.epochs < 1 or hparams.minibatches < 1:
            raise ValueError("epochs and minibatches must be >= 1")
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
        bonus, and ``log π(a|s)`` of the action (the old policy of the ratios)."""
        policy_out, value_out = self.net(obs, task_id)
        action = self.net.sample(policy_out, task_id)
        log_prob, _ = self.net.log_prob_entropy(policy_out, action, task_id)
        return action, self.net.unnormalize(value_out, task_id), None, log_prob

    @torch.no_grad()
    def value(self, obs: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        return self.net.value(obs, task_id)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        """Device actions → env actions: int64 indices, or Gaussian samples clipped to the
        policy space [-1, 1] (ratios use the log-probability of the unclipped sample)."""
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
    def minibatch_indices(self, batch: RolloutBatch) -> list[torch.Tensor]:
        """Row indices of one epoch's task-stratified minibatches: each task's rows shuffled
        (torch's generator on the device) and split into ``minibatches`` equal parts of
        ``per_task // minibatches`` rows; index tensor ``m`` holds part ``m`` of every task,
        task-major."""
        t, n, m = batch.num_tasks, batch.per_task, self.hp.minibatches
        size = n // m
        order = torch.argsort(torch.rand(t, n, device=batch.returns.device), dim=1)
        rows = order + torch.arange(t, device=order.device).unsqueeze(1) * n
        return [rows[:, k * size:(k + 1) * size].reshape(-1) for k in range(m)]

    def losses(self, batch: RolloutBatch, target: torch.Tensor, adv: torch.Tensor,
               old_value: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample terms and the per-task loss of minibatch ``idx`` of a rollout whose value
        targets, advantages and (value-output units) old values are given."""
        if batch.log_prob is None:
            raise ValueError("PPO needs the acting policy's log-probabilities in the rollout")
        hp = self.hp
        t = batch.num_tasks
        per_task = idx.shape[0] // t
        obs, action, tid = batch.obs[idx], batch.action[idx], batch.task_id[idx]
        policy_out, value_out = self.net(obs, tid, per_task)
        log_prob, entropy = self.net.log_prob_entropy(policy_out, action, tid)
        log_ratio = log_prob - batch.log_prob[idx]
        ratio = log_ratio.exp()
        a = adv[idx]
        if hp.normalize_advantage:
            at = a.view(t, per_task)
            std = at.std(1, keepdim=True) if per_task > 1 else torch.ones_like(at[:, :1])
            a = ((at - at.mean(1, keepdim=True)) / (std + 1e-8)).view(-1)
        a = a.detach()
        policy = -torch.minimum(ratio * a, ratio.clamp(1.0 - hp.clip_range,
                                                       1.0 + hp.clip_range) * a)
        tgt = target[idx]
        value = (value_out - tgt).pow(2)
        if hp.clip_value is not None:
            old = old_value[idx]
            clipped = old + (value_out - old).clamp(-hp.clip_value, hp.clip_value)
            value = torch.maximum(value, (clipped - tgt).pow(2))
        total = policy + hp.vf_coef * value - hp.ent_coef * entropy
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > hp.clip_range).float().mean()
        return {
            "policy": policy, "value": value, "entropy": entropy, "total": total,
            "per_task": total.view(t, per_task).mean(1), "approx_kl": approx_kl,
            "clip_fraction": clip_fraction,
        }

    def update(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """``epochs`` passes of ``minibatches`` gradient steps over one finished rollout. With
        ``compile`` set, the targets, each minibatch's loss and each optimizer step run
        compiled (:mod:`mtrl.agents.compiling`); the combiner's backward passes run eagerly."""
        hp = self.hp
        if batch.num_tasks != self.num_tasks:
            raise ValueError(f"batch has {batch.num_tasks} tasks, agent {self.num_tasks}")
        if batch.per_task < hp.minibatches:
            raise ValueError(f"{batch.per_task} rollout rows per task cannot make "
                             f"{hp.minibatches} minibatches")
        c = self._compiler
        c.step_begin()
        target, adv, sigma = c.run("targets", _targets_phase, self.net, batch)
        # The acting values in the units of the value output (normalized with PopArt).
        old_value = batch.value if sigma is None else self.net.popart.normalize_ids(  # type: ignore[union-attr]
            batch.value, batch.task_id)
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        epochs = 0
        for _ in range(hp.epochs):
            epochs += 1
            kls = []
            for idx in self.minibatch_indices(batch):
                out = c.run("loss", self.losses, batch, target, adv, old_value, idx,
                            eager=compile_blocker(self.combiner, self._routers,
                                                  "actor-critic"))
                self.optim.zero_grad(set_to_none=True)
                self.combiner.backward(out["per_task"], self._params)
                if self._routers:
                    per_sample = out["total"].detach()
                    total = torch.stack([r.router_loss(per_sample) for r in self._routers]).sum()
                    if total.requires_grad:
                        total.backward()
                gn = c.run("step", self._step)
                if gn is not None:
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + gn
                steps += 1
                kls.append(out["approx_kl"])
                for key in ("policy", "value", "entropy"):
                    sums[key] = sums.get(key, 0.0) + out[key].detach().mean()
                sums["loss"] = sums.get("loss", 0.0) + out["per_task"].detach().mean()
                for key in ("approx_kl", "clip_fraction"):
                    sums[key] = sums.get(key, 0.0) + out[key]
            if hp.target_kl is not None and float(torch.stack(kls).mean()) > hp.target_kl:
                break
        metrics = {k: v / steps for k, v in sums.items()}  # type: ignore[misc]
        g, v = batch.returns, batch.value
        metrics["explained_variance"] = 1.0 - (g - v).var() / g.var().clamp_min(1e-8)
        metrics["value_mean"] = v.mean()
        metrics["return_mean"] = g.mean()
        metrics["epochs"] = torch.tensor(float(epochs), device=g.device)
        return c.own(metrics)

    def _step(self) -> torch.Tensor | None:
        """Gradient clipping (with ``grad_clip``) and the optimizer step; the norm or None."""
        gn = None
        if self.hp.grad_clip is not None:
            gn = nn.utils.clip_grad_norm_(self._params, self.hp.grad_clip).detach()
        self.optim.step()
        return gn

    @property
    def compile_info(self) -> dict[str, Any]:
        """``agent.compile`` as it runs (:mod:`mtrl.agents.compiling`)."""
        return self._compiler.info()



@torch.no_grad()
def _targets_phase(net: ActorCritic, batch: RolloutBatch
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`~mtrl.agents.a2c.rollout_targets` without gradient: a phase of its own in compiled
    updates, since PopArt rescales the value head in place, which must not happen inside the
    graph that differentiates it."""
    return rollout_targets(net, batch)


def build_mtppo(
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
    lr: float = 3e-4,
    optim_eps: float = 1e-5,
    hparams: PPOHyperparams | None = None,
    combiner: Combiner | None = None,
    compile_mode: str = "off",
    device: torch.device | str = "cpu",
) -> MTPPO:
    """Network (:class:`ActorCritic`), PopArt statistics and Adam optimizer of an MT-PPO agent
    (Adam with ε = 1e-5, as the PPO implementations of OpenAI baselines and SB3).
    ``compile_mode``: ``agent.compile`` (:mod:`mtrl.agents.compiling`; with ``graphs`` on CUDA
    Adam is built ``capturable``)."""
    from mtrl.modules.popart import PopArtStatistics

    stats = PopArtStatistics(num_tasks, beta=popart_beta) if popart else None
    net = ActorCritic(
        obs_shape, num_tasks, num_actions=num_actions, action_dim=action_dim,
        actor_hidden=actor_hidden, critic_hidden=critic_hidden, actor_arch=actor_arch,
        critic_arch=critic_arch, arch_cfg=arch_cfg, torso=torso, popart=stats,
    ).to(device)
    capturable = resolve_compile_mode(compile_mode, device)[0] == "graphs"
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=optim_eps, capturable=capturable)
    return MTPPO(net, opt, hparams or PPOHyperparams(), combiner=combiner,
                 compile_mode=compile_mode)
