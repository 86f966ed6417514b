"""Multi-task Soft Actor-Critic (MT-SAC).

Soft Actor-Critic: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications"
(arXiv:1812.05905). Multi-task variant as benchmarked in Meta-World (Yu et al. 2019, Sec. 5):
one policy and twin critics conditioned on the one-hot task id, and one learned temperature per
task ("disentangled alpha"), so that each task's entropy is tuned on its own samples.

For a task-stratified batch (task k's rows are block k), with α_k = exp(log α_k):

* soft Q target (Eq. 3 with the soft value of Eq. 3/4, clipped double Q):
  ``y = r + γ (1 − d) (min_j Q̄_j(s', a') − α_k log π(a'|s'))``, ``a' ~ π(·|s')``,
  where ``d`` is 1 only for true terminals (time-limit truncations bootstrap);
* critic loss (Eq. 5), per task k: ``L_Q[k] = E_{(s,a)∈k} Σ_j ½ (Q_j(s, a) − y)²``;
* actor loss (Eq. 7 with the reparameterization of Eq. 11), per task k:
  ``L_π[k] = E_{s∈k} [α_k log π(ã|s) − min_j Q_j(s, ã)]``, ``ã = tanh(μ + σ ε)``;
* temperature loss (Eq. 18), per task k, on log α_k as in the authors' implementation:
  ``L_α[k] = −log α_k · E_{s∈k}[log π(ã|s) + H̄]``, with target entropy H̄ (default −|A|);
* target networks: ``θ̄ ← τ θ + (1 − τ) θ̄`` after every critic step.

With PopArt (van Hasselt et al. 2016, Algorithm 1; Hessel et al. 2019, "Multi-task Deep
Reinforcement Learning with PopArt", Sec. 3) the critics end in per-task heads whose outputs
``n`` are normalized values, ``Q = σ_k n + μ_k``. Each update, in this order:

1. the target ``y`` is computed in unnormalized units with the current statistics;
2. the per-task statistics (μ, σ) → (μ', σ') take this batch's targets, and every head using
   them (both online critics *and* both target critics) is rescaled so that its unnormalized
   outputs do not change: ``W' = σ/σ' W``, ``b' = (σ b + μ − μ')/σ'``;
3. the critic loss is ``½ Σ_j (n_j(s, a) − (y − μ'_k)/σ'_k)²``: targets are normalized with the
   statistics of the step that produced them, never stale ones.

The actor sees unnormalized Q. With ``popart_actor_scale`` each task's actor loss is divided by
its σ_k (detached), the SAC analogue of the normalized policy gradient of Hessel et al.: it
leaves each task's optimum unchanged and keeps a task with large rewards from dominating the
shared actor's gradient.

Distral (Teh et al. 2017, Eq. 2; :mod:`mtrl.agents.distral`), with a distilled policy π0 and
``c_KL = α/β``: the actor is the set of task policies πi, and the reward is regularized by
``c_KL log π0(a|s) − (c_Ent + c_KL) log πi(a|s)``. The entropy weight ``c_Ent`` is either the
paper's fixed ``(1 − α)/β`` or, with ``tune_entropy``, each task's learned SAC temperature α_k
(as the SAC-based Distral of facebookresearch/mtrl). With ``τ_k = c_Ent,k + c_KL``:

* target: ``y = r + γ (1 − d) (min_j Q̄_j(s', a') − τ_k log πi(a'|s') + c_KL log π0(a'|s'))``;
* actor: ``L_π[k] = E[τ_k log πi(ã|s) − c_KL log π0(ã|s) − min_j Q_j(s, ã)]`` (π0 fixed);
* π0: ``L_0[k] = c_KL E_{s∈k}[KL(πi(·|s) ‖ π0(·|s))]`` with πi fixed, the closed-form KL of the
  pre-tanh Gaussians (equal to that of the squashed policies), on its own optimizer.

**Critic ensembles.** ``num_critics = N ≥ 2`` critics enter the target and the actor loss through
``reduce_j``: ``min_j`` (clipped double Q; Fujimoto et al. 2018, "Addressing Function
Approximation Error in Actor-Critic Methods", Eq. 10, here over all N; REDQ, Chen et al. 2021,
takes it over a random subset instead) or ``mean_j`` (BRO's target ``mean − β |Q_1 − Q_2| / 2``
with pessimism β = 0, Nauman et al. 2024, whose β = 1 is the min of two; BRC, which averages the
members' probabilities). ``L_Q`` sums over all N members.

**Categorical critic** (BRC: Nauman et al. 2025, "Bigger, Regularized, Categorical", and its
code, naumix/BiggerRegularizedCategorical; C51: Bellemare et al. 2017). Each member outputs a
distribution ``p_j(·|s, a)`` over the fixed atoms ``z_1 … z_A`` (``linspace(v_min, v_max, A)``);
``Q_j = Σ_i p_j,i z_i``. The next-state distribution ``p̄`` is the average of the target
members' distributions (``mean``, BRC) or the distribution of the member with the lowest
expectation (``min``), and the soft Bellman update moves its atoms:
``T z_i = r + γ (1 − d) (z_i − α_k log π(a'|s'))`` (BRC's target; with Distral
``− τ_k log πi + c_KL log π0``), projected back on the support by C51's Algorithm 1
(:func:`~mtrl.modules.policies.categorical_projection`) into ``m``. Per task k,
``L_Q[k] = E_{(s,a)∈k} Σ_j −Σ_i m_i log p_j,i(s, a)`` (cross-entropy, ≥ 0, so that every
combiner applies), and the actor maximizes ``reduce_j Q_j(s, ã)``. With ``reward_scaler``
(:mod:`mtrl.agents.reward_scaling`, BRC's per-task reward normalization) each task's rewards are
divided by ``d_k`` before the target, so that the scaled soft returns fit the support; ``target``
and ``q`` are then in scaled units. The categorical critic excludes PopArt (see
:class:`~mtrl.modules.policies.TwinQCritic`) and ``max_q_value`` (the support bounds Q).

The per-task vectors ``L_Q`` and ``L_π`` go to gradient combiners (``mtrl.optim``), ``mean``
by default. ``L_α[k]`` depends only on ``log α_k``, so each temperature moves only with its
own task's samples.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mtrl.agents.base import PolicyOutput, TaskIds
from mtrl.agents.compiling import (
    UpdateCompiler,
    compile_blocker,
    note_blockers,
    resolve_compile_mode,
)
from mtrl.agents.distral import DistilledPolicy, Distral, DistralHyperparams, Pi0Actor
from mtrl.agents.reward_scaling import ReturnScaler
from mtrl.data.replay import Batch
from mtrl.modules.distributions import gaussian_kl
from mtrl.modules.policies import (
    TanhGaussianActor,
    TwinQCritic,
    categorical_projection,
    critic_param_names,
    critic_state_to_fused,
    critic_state_to_separate,
    tanh_gaussian_log_prob,
)
from mtrl.modules.popart import PopArtStatistics, TaskValueHead, preserve_outputs_
from mtrl.modules.routing import RoutingNet, routed_nets
from mtrl.optim.combiners import Combiner, MeanCombiner


@dataclass
class SACHyperparams:
    gamma: float = 0.99
    tau: float = 0.005
    target_entropy: float = -4.0
    grad_clip: float | None = None
    max_q_value: float | None = None
    popart_actor_scale: bool = True
    critic_reduce: str = "min"
    """min | mean over the critics, in the target and the actor loss (module docstring)."""


CRITIC_REDUCTIONS = ("min", "mean")


class MTSAC:
    """Multi-task SAC. Receives built modules and optimizers; see the module docstring for the
    equations. ``update`` returns detached 0-dim tensors (no host sync); call ``float()`` on them
    when logging. ``compile_mode`` (``agent.compile``): its phases compiled with torch.compile,
    or captured as CUDA graphs, as LeanRL compiles its SAC update
    (:mod:`mtrl.agents.compiling`)."""

    def __init__(
        self,
        actor: TanhGaussianActor,
        critic: TwinQCritic,
        critic_target: TwinQCritic,
        log_alpha: nn.Parameter,
        actor_optim: torch.optim.Optimizer,
        critic_optim: torch.optim.Optimizer,
        alpha_optim: torch.optim.Optimizer,
        hparams: SACHyperparams,
        *,
        actor_combiner: Combiner | None = None,
        critic_combiner: Combiner | None = None,
        distral: Distral | None = None,
        tune_entropy: bool = True,
        reward_scaler: ReturnScaler | None = None,
        compile_mode: str = "off",
    ) -> None:
        if hparams.critic_reduce not in CRITIC_REDUCTIONS:
            raise ValueError(f"critic_reduce={hparams.critic_reduce!r}; allowed: "
                             + ", ".join(CRITIC_REDUCTIONS))
        if critic.categorical and hparams.max_q_value is not None:
            raise ValueError("max_q_value clips squared-error targets; a categorical critic is "
                             "bounded by its support [v_min, v_max]")
        self.reward_scaler = reward_scaler
        self.actor = actor
        self.distral = distral
        if distral is not None and (distral.optim is None or distral.pi0.discrete):
            raise ValueError("Distral-SAC needs a Gaussian π0 with its own optimizer")
        # Without Distral the temperatures are always learned (SAC); with it, only if asked.
        self.learn_alpha = distral is None or tune_entropy
        self._last_kl: torch.Tensor | None = None
        self.critic = critic
        self.critic_target = critic_target
        self.log_alpha = log_alpha
        self.actor_optim = actor_optim
        self.critic_optim = critic_optim
        self.alpha_optim = alpha_optim
        self.hp = hparams
        self.actor_combiner = actor_combiner or MeanCombiner()
        self.critic_combiner = critic_combiner or MeanCombiner()
        if self.actor_combiner is self.critic_combiner:
            raise ValueError("actor and critic need separate combiner instances")
        # Combiners hook the networks they combine gradients for (per-task gradients from one
        # backward pass); the frozen critic inside the actor loss is not recorded.
        self.actor_combiner.watch(actor)
        self.critic_combiner.watch(critic)
        self.num_tasks = log_alpha.shape[0]
        self.device = log_alpha.device
        self.critic_target.requires_grad_(False)
        self._critic_params: list[torch.Tensor] = list(critic.parameters())
        self._target_params: list[torch.Tensor] = list(critic_target.parameters())
        self._actor_params: list[torch.Tensor] = list(actor.parameters())
        self._task_ids = TaskIds(self.device)
        # Routing networks (one per critic member, in member order) learn from per-sample losses.
        self._critic_routers = list(routed_nets(critic))
        self._actor_routers = list(routed_nets(actor))
        if self._critic_routers and len(self._critic_routers) != critic.num_critics:
            raise ValueError("routed critics need exactly one routing network per member")
        self._pi0_params: list[torch.Tensor] = (
            [] if distral is None else list(distral.pi0.parameters()))
        self._compiler = UpdateCompiler(compile_mode, self.device)
        note_blockers(self._compiler, [(self.critic_combiner, self._critic_routers, "critic"),
                                       (self.actor_combiner, self._actor_routers, "actor")])

    @property
    def compile_info(self) -> dict[str, Any]:
        """``agent.compile`` as it runs: requested and effective mode, and the notes on what
        runs eagerly (:mod:`mtrl.agents.compiling`)."""
        return self._compiler.info()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1] for a batch of observations of the given tasks."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        tid = self._task_ids(task_id)
        if deterministic:
            # The mode of the policy: also greedy routes in routed architectures.
            was_training = self.actor.training
            self.actor.eval()
            try:
                action = self.actor.deterministic(obs_t, tid)
            finally:
                self.actor.train(was_training)
        else:
            action, _ = self.actor.sample(obs_t, tid)
        return action.cpu().numpy()

    @torch.no_grad()
    def act_pi0(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False
                ) -> np.ndarray:
        """Actions of Distral's distilled policy π0: ``tanh(μ0)``, or a squashed sample."""
        assert self.distral is not None
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        mean, log_std = self.distral.pi0(obs_t, self._task_ids(task_id))
        u = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u).cpu().numpy()

    # What a distillation teacher reads (mtrl.teachers.MtrlTeacher): a tanh-squashed Gaussian.
    policy_squashed = True
    policy_feature_dim: int | None = None

    @torch.no_grad()
    def policy_output(self, obs: torch.Tensor, task_id: torch.Tensor) -> PolicyOutput:
        """The pre-tanh Gaussian ``(mean, log_std)`` of the task policies for device tensors."""
        mean, log_std = self.actor(obs.reshape(obs.shape[0], -1).float(), task_id)
        return PolicyOutput(mean=mean, log_std=log_std)

    def policy_modules(self) -> list[nn.Module]:
        """The modules ``act`` uses (frozen when the agent serves as a teacher)."""
        return [self.actor] + ([self.distral.pi0] if self.distral is not None else [])

    def extra_policies(self) -> dict[str, Pi0Actor]:
        """Policies evaluated besides the task policies: Distral's π0 (``"pi0"``)."""
        return {} if self.distral is None else {"pi0": Pi0Actor(self)}

    def _entropy_coef(self) -> torch.Tensor:
        """Per-task weight of ``−log πi`` in the soft value: α_k, or with Distral τ_k."""
        alpha = self.log_alpha.detach().exp()
        if self.distral is None:
            return alpha
        hp = self.distral.hp
        ent = alpha if self.learn_alpha else torch.full_like(alpha, hp.ent_coef)
        return ent + hp.kl_coef

    # ------------------------------------------------------------------ learning
    def losses(self, batch: Batch, noise: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """The critic half of :meth:`update` without its parameter step: the soft target
        ``target`` (reward units; categorical: the expectation of the projected target
        distribution ``m``, returned as ``target_probs``), the critics' values ``q``
        ``[members, B]`` (reward units), the per-sample, per-member squared errors (categorical:
        cross-entropies) ``member`` (normalized units with PopArt) and the per-task critic
        losses ``critic`` ``[T]``. With PopArt this runs the statistics step (the targets are
        normalized with the statistics they produce), as ``update`` does; ``alpha`` is the
        per-sample entropy weight of this step. With a reward scaler, "reward units" are the
        scaled rewards. ``noise``: the reparameterization noise of the next actions (drawn here
        if None)."""
        if batch.num_tasks != self.num_tasks:
            raise ValueError(f"batch has {batch.num_tasks} tasks, agent {self.num_tasks}")
        return self._critic_losses(batch, self._critic_targets(batch, noise))

    @torch.no_grad()
    def _critic_targets(self, batch: Batch, noise: torch.Tensor | None
                        ) -> dict[str, torch.Tensor]:
        """The no-gradient half of :meth:`losses`: the entropy weights ``alpha``, the soft
        targets (categorical: ``target_probs``) and, with PopArt, the statistics step and the
        normalized targets ``target_norm``. A phase of its own in compiled updates: PopArt
        rescales the heads in place, which must not happen inside the graph that
        differentiates them."""
        # The same α (Distral: τ) for critic and actor this step.
        alpha_b = self._entropy_coef().repeat_interleave(batch.per_task)
        if self.critic.categorical:
            return {"alpha": alpha_b, "target_probs": self._target_probs(batch, alpha_b, noise)}
        y = self._target(batch, alpha_b, noise)
        out = {"alpha": alpha_b, "target": y}
        if self.critic.popart is not None:
            out["target_norm"] = self._popart_step(y, batch)
        return out

    def _critic_losses(self, batch: Batch, targets: dict[str, torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
        """The differentiated half of :meth:`losses`, from :meth:`_critic_targets`."""
        alpha_b = targets["alpha"]
        if self.critic.categorical:
            return self._categorical_losses(batch, alpha_b, targets["target_probs"])
        y = targets["target"]
        popart = self.critic.popart
        if popart is None:
            q = self._clip(self.critic(batch.obs, batch.action, batch.task_id, batch.per_task))
            member_losses = 0.5 * (q - y).pow(2)
        else:
            q_norm = self.critic.normalized(batch.obs, batch.action, batch.task_id,
                                            batch.per_task)
            member_losses = 0.5 * (q_norm - targets["target_norm"]).pow(2)
            q = popart.denormalize_ids(q_norm.detach(), batch.task_id)
        return {"target": y, "q": q, "member": member_losses, "alpha": alpha_b,
                "critic": self._per_task(member_losses.sum(0), batch)}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on critics, actor and temperatures from a stratified batch. With
        ``compile`` set, its phases run compiled (:mod:`mtrl.agents.compiling`); the
        gradient combiners' backward passes always run eagerly."""
        if batch.num_tasks != self.num_tasks:
            raise ValueError(f"batch has {batch.num_tasks} tasks, agent {self.num_tasks}")
        self._compiler.step_begin()
        try:
            return self._compiler.own(self._update(batch))
        except BaseException:
            self.critic.requires_grad_(True)  # frozen only while the actor loss is computed
            raise

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        # Phases, compiled with agent.compile: [critic targets, PopArt step] [critic loss]
        # critic backward [critic step + actor loss] actor backward [actor, π0 and temperature
        # steps + target update].
        c = self._compiler
        # Critic (Eq. 5)
        targets = c.run("critic_target", self._critic_targets, batch, self._noise(batch))
        out = c.run("critic_loss", self._critic_losses, batch, targets,
                    eager=compile_blocker(self.critic_combiner, self._critic_routers, "critic"))
        critic_losses = out["critic"]
        self.critic_optim.zero_grad(set_to_none=True)
        self.critic_combiner.backward(critic_losses, self._critic_params)
        self._router_backward(self._critic_routers, list(out["member"].detach()))

        # Actor (Eq. 7), through the freshly updated critic, whose weights stay fixed here.
        self.critic.requires_grad_(False)
        noise = self._noise(batch)
        actor_eager = compile_blocker(self.actor_combiner, self._actor_routers, "actor")
        if actor_eager is None:
            actor = c.run("critic_step_actor_loss", self._critic_step_actor_losses, batch,
                          out["alpha"], noise)
        else:
            critic_gn = c.run("critic_step", self._step, self.critic_optim,
                              self._critic_params)
            actor = c.run("actor_loss", self._actor_losses, batch, out["alpha"], noise,
                          eager=actor_eager)
            actor["critic_grad_norm"] = critic_gn
        self.critic.requires_grad_(True)
        self.actor_optim.zero_grad(set_to_none=True)
        self.actor_combiner.backward(actor["actor"], self._actor_params)
        self._router_backward(self._actor_routers, [actor["per_sample"].detach()])
        pi0_loss = actor.get("pi0")
        if pi0_loss is not None:
            assert self.distral is not None and self.distral.optim is not None
            self._last_kl = c.keep(actor["kl"])  # read at log time, after later updates
            self.distral.optim.zero_grad(set_to_none=True)
            pi0_loss.mean().backward()
        if self.learn_alpha:
            # Temperatures (Eq. 18): L_α[k] = −log α_k (E_k[log π] + H̄) is linear in log α_k,
            # so its gradient is −(E_k[log π] + H̄), exactly what autograd would return.
            self.alpha_optim.zero_grad(set_to_none=True)
            self.log_alpha.grad = actor["alpha_grad"]

        metrics = c.run("finish", self._finish, out["critic"], out["q"], actor)
        critic_gn = actor.get("critic_grad_norm")
        if critic_gn is not None:
            metrics["critic_grad_norm"] = critic_gn
        if pi0_loss is not None:
            assert self._last_kl is not None
            metrics["distral_kl"] = self._last_kl.mean()
            metrics["distral_pi0"] = pi0_loss.detach().mean()
        return metrics

    def _noise(self, batch: Batch) -> torch.Tensor | None:
        """Compiled updates: the reparameterization noise ``ε [B, action_dim]`` of the next
        phase, drawn eagerly from the device's generator (the numbers an eager update draws
        inside the phase, in the same order). Eager updates draw it where it is used (None)."""
        if not self._compiler.active:
            return None
        b = batch.obs.shape[0]
        return torch.randn(b, self.actor.action_dim, device=batch.obs.device)

    def _critic_step_actor_losses(self, batch: Batch, alpha_b: torch.Tensor,
                                  noise: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The critic's optimizer step, then :meth:`_actor_losses` (one compiled phase)."""
        critic_gn = self._step(self.critic_optim, self._critic_params)
        out = self._actor_losses(batch, alpha_b, noise)
        if critic_gn is not None:
            out["critic_grad_norm"] = critic_gn
        return out

    def _actor_losses(self, batch: Batch, alpha_b: torch.Tensor, noise: torch.Tensor | None
                      ) -> dict[str, torch.Tensor]:
        """Per-task actor losses (Eq. 7; with Distral, π0's distillation losses and the KL)
        with the critic frozen by the caller, and the temperature losses (Eq. 18) with their
        gradient."""
        action, log_prob, u, mean, log_std = self.actor.rsample(
            batch.obs, batch.task_id, batch.per_task, noise=noise)
        q_pi = self._reduce(self.critic(batch.obs, action, batch.task_id, batch.per_task))
        actor_per_sample = alpha_b * log_prob - q_pi
        out: dict[str, torch.Tensor] = {}
        if self.distral is not None:
            hp = self.distral.hp
            mean0, log_std0 = self.distral.pi0(batch.obs, batch.task_id, batch.per_task)
            # π0 enters the actor loss as a fixed density (gradient through ã only) ...
            logp0 = tanh_gaussian_log_prob(u, mean0.detach(), log_std0.detach())
            actor_per_sample = actor_per_sample - hp.kl_coef * logp0
            # ... and learns by distillation: KL(πi ‖ π0) with πi fixed.
            kl = gaussian_kl(mean.detach(), log_std.detach(), mean0, log_std0)
            out["pi0"] = self._per_task(hp.kl_coef * kl, batch)
            out["kl"] = self._per_task(kl.detach(), batch)
        actor_losses = self._per_task(actor_per_sample, batch)
        popart = self.critic.popart
        if popart is not None and self.hp.popart_actor_scale:
            actor_losses = actor_losses / popart.sigma.detach()
        out["actor"] = actor_losses
        out["per_sample"] = actor_per_sample
        # Temperatures (Eq. 18), one per task, on this step's log-probabilities.
        mean_log_prob = self._per_task(log_prob.detach(), batch)
        shifted = mean_log_prob + self.hp.target_entropy
        out["mean_log_prob"] = mean_log_prob
        out["alpha_loss"] = -self.log_alpha.detach() * shifted
        out["alpha_grad"] = -shifted
        return out

    def _step(self, optim: torch.optim.Optimizer, params: list[torch.Tensor]
              ) -> torch.Tensor | None:
        """Clip the gradients (with ``grad_clip``) and step the optimizer; the norm or None."""
        gn = self._clip_grad(params)
        optim.step()
        return gn

    def _finish(self, critic_losses: torch.Tensor, q: torch.Tensor,
                actor: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The actor, π0 and temperature steps, the Polyak averaging of the target critics and
        the metrics."""
        actor_gn = self._step(self.actor_optim, self._actor_params)
        if "pi0" in actor:
            assert self.distral is not None and self.distral.optim is not None
            self._step(self.distral.optim, self._pi0_params)
        if self.learn_alpha:
            self.alpha_optim.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.hp.tau)
        metrics = {
            "critic": critic_losses.detach().mean(),
            "actor": actor["actor"].detach().mean(),
            "alpha": actor["alpha_loss"].mean(),
            "q_mean": q.detach().mean(),
            "entropy": -actor["mean_log_prob"].mean(),
        }
        if actor_gn is not None:
            metrics["actor_grad_norm"] = actor_gn
        return metrics

    def task_metrics(self) -> dict[str, torch.Tensor]:
        """Per-task values to log by task name: ``alpha`` and, with PopArt, ``popart/mu`` and
        ``popart/sigma``, each of shape [num_tasks]."""
        out = {"alpha": self.log_alpha.detach().exp()}
        if self.distral is not None:
            out["alpha"] = self._entropy_coef() - self.distral.hp.kl_coef  # c_Ent per task
            if self._last_kl is not None:
                out["distral/kl"] = self._last_kl
        if self.critic.popart is not None:
            out["popart/mu"] = self.critic.popart.mu.detach().clone()
            out["popart/sigma"] = self.critic.popart.sigma.detach().clone()
        if self.reward_scaler is not None:
            out["reward_divisor"] = self._reward_divisors()
        return out

    def observe(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                task_id: np.ndarray) -> None:
        """Collected vector steps ``[n, N]``: feed the reward scaler's return statistics (a
        no-op without one)."""
        if self.reward_scaler is not None:
            self.reward_scaler.observe(reward, terminated, truncated, task_id)

    def _reward_divisors(self) -> torch.Tensor:
        assert self.reward_scaler is not None
        return self.reward_scaler.divisors(self._entropy_coef(), self.hp.target_entropy)

    def _reward(self, batch: Batch) -> torch.Tensor:
        """The batch's rewards, divided by their task's ``d_k`` with a reward scaler."""
        if self.reward_scaler is None:
            return batch.reward
        return batch.reward / self._reward_divisors().repeat_interleave(batch.per_task)

    def _reduce(self, q: torch.Tensor) -> torch.Tensor:
        """``[members, B] → [B]``: the minimum or the mean over the critics."""
        return q.min(0).values if self.hp.critic_reduce == "min" else q.mean(0)

    def _categorical_losses(self, batch: Batch, alpha_b: torch.Tensor, m: torch.Tensor
                            ) -> dict[str, torch.Tensor]:
        """:meth:`losses` of the categorical critic (module docstring), from the projected
        target distribution ``m``."""
        support = self.critic.support
        assert support is not None
        logits = self.critic.logits(batch.obs, batch.action, batch.task_id, batch.per_task)
        member_losses = -(m * torch.log_softmax(logits, dim=-1)).sum(-1)
        q = torch.softmax(logits.detach(), dim=-1) @ support
        return {"target": m @ support, "target_probs": m, "q": q, "member": member_losses,
                "alpha": alpha_b, "critic": self._per_task(member_losses.sum(0), batch)}

    @torch.no_grad()
    def _target_probs(self, batch: Batch, alpha_b: torch.Tensor,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
        """The projected soft target distribution ``m [B, A]`` of the categorical critic."""
        support = self.critic_target.support
        assert support is not None
        n = batch.per_task
        next_action, next_log_prob, u, _, _ = self.actor.rsample(batch.next_obs, batch.task_id, n,
                                                                 noise=noise)
        probs = torch.softmax(
            self.critic_target.logits(batch.next_obs, next_action, batch.task_id, n), dim=-1)
        if self.hp.critic_reduce == "mean":
            p = probs.mean(0)
        else:  # the member with the lowest expected value, per sample
            low = (probs @ support).argmin(0)
            p = probs.gather(0, low.view(1, -1, 1).expand(1, *probs.shape[1:])).squeeze(0)
        shift = -alpha_b * next_log_prob
        if self.distral is not None:
            mean0, log_std0 = self.distral.pi0(batch.next_obs, batch.task_id, n)
            shift = shift + self.distral.hp.kl_coef * tanh_gaussian_log_prob(u, mean0, log_std0)
        discount = self.hp.gamma * (1.0 - batch.terminated)
        atoms = (self._reward(batch).unsqueeze(1)
                 + discount.unsqueeze(1) * (support.unsqueeze(0) + shift.unsqueeze(1)))
        return categorical_projection(atoms, p, support)

    @torch.no_grad()
    def _popart_step(self, y: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Update the PopArt statistics with this batch's targets, rescale every head that
        uses them (online and target critics) and return the targets normalized with the new
        statistics."""
        popart = self.critic.popart
        assert popart is not None
        y_tasks = y.view(batch.num_tasks, batch.per_task)
        old_mu, old_sigma, new_mu, new_sigma = popart.update(y_tasks)
        for critic in (self.critic, self.critic_target):
            for head in critic.heads:
                assert isinstance(head, TaskValueHead)
                preserve_outputs_(head.weight, head.bias, old_mu, old_sigma, new_mu, new_sigma)
        return popart.normalize(y_tasks).view(-1)

    @staticmethod
    def _router_backward(routers: list[RoutingNet], per_sample: list[torch.Tensor]) -> None:
        """Policy-gradient step of routing networks (Rosenbaum et al. 2018): reward = −loss of
        each sample for the route it took; gradients accumulate next to the network's own."""
        if not routers:
            return
        losses = [r.router_loss(loss) for r, loss in zip(routers, per_sample, strict=True)]
        total = torch.stack(losses).sum()
        if total.requires_grad:  # gumbel routers learn from the task loss itself
            total.backward()

    def architecture_reports(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per-task routing / expert weights of routed architectures, keyed by network."""
        return {"actor": self.actor.body.report(), "critic": self.critic.report()}

    def combiner_reports(self) -> dict[str, dict[str, torch.Tensor]]:
        """What each gradient combiner has to report since the last call (gradient cosine
        matrices, conflict fractions, loss weights), keyed by network."""
        return {"actor": self.actor_combiner.report(), "critic": self.critic_combiner.report()}

    @torch.no_grad()
    def _target(self, batch: Batch, alpha_b: torch.Tensor, noise: torch.Tensor | None = None
                ) -> torch.Tensor:
        n = batch.per_task
        next_action, next_log_prob, u, _, _ = self.actor.rsample(batch.next_obs, batch.task_id, n,
                                                                 noise=noise)
        q_next = self._reduce(self.critic_target(batch.next_obs, next_action, batch.task_id, n))
        soft_v = q_next - alpha_b * next_log_prob
        if self.distral is not None:
            mean0, log_std0 = self.distral.pi0(batch.next_obs, batch.task_id, n)
            soft_v = soft_v + self.distral.hp.kl_coef * tanh_gaussian_log_prob(u, mean0, log_std0)
        y = self._reward(batch) + self.hp.gamma * (1.0 - batch.terminated) * soft_v
        return self._clip(y)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        m = self.hp.max_q_value
        return x if m is None else x.clamp(-m, m)

    def _per_task(self, per_sample: torch.Tensor, batch: Batch) -> torch.Tensor:
        return per_sample.view(batch.num_tasks, batch.per_task).mean(1)

    def _clip_grad(self, params: list[torch.Tensor]) -> torch.Tensor | None:
        if self.hp.grad_clip is None:
            return None
        return nn.utils.clip_grad_norm_(params, self.hp.grad_clip).detach()

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        out = {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "actor_combiner": self.actor_combiner.state_dict(),
            "critic_combiner": self.critic_combiner.state_dict(),
        }
        if self.distral is not None:
            out["distral"] = self.distral.state_dict()
        if self.reward_scaler is not None:
            out["reward_scaler"] = self.reward_scaler.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (self.distral is None) != ("distral" not in state):
            raise ValueError("checkpoint and agent disagree on Distral (π0 present in one only)")
        if (self.reward_scaler is None) != ("reward_scaler" not in state):
            raise ValueError("checkpoint and agent disagree on reward normalization (its "
                             "statistics present in one only)")
        if self.distral is not None:
            self.distral.load_state_dict(state["distral"])
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        if state["log_alpha"].shape != self.log_alpha.shape:
            raise ValueError(
                f"log_alpha has shape {tuple(state['log_alpha'].shape)} in the checkpoint, "
                f"{tuple(self.log_alpha.shape)} here (different number of tasks)"
            )
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(
            critic_optim_state_for(self.critic, state["critic_optim"], state["critic"]))
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.actor_combiner.load_state_dict(state["actor_combiner"])
        self.critic_combiner.load_state_dict(state["critic_combiner"])
        self._task_ids.clear()

    def train(self) -> None:
        self.actor.train()
        self.critic.train()
        if self.distral is not None:
            self.distral.pi0.train()

    def eval(self) -> None:
        self.actor.eval()
        self.critic.eval()
        if self.distral is not None:
            self.distral.pi0.eval()


def critic_optim_state_for(critic: TwinQCritic, optim_state: dict[str, Any],
                           critic_state: dict[str, Any]) -> dict[str, Any]:
    """The critic optimizer state of a checkpoint, converted to ``critic``'s form when the
    checkpoint was written by the other one (fused / separate members): Adam's moments are
    per-element, so they are stacked and transposed exactly like the weights, and the step count
    is shared."""
    fused_ckpt = "fused.layers.0.weight" in critic_state
    separate_ckpt = "qs.0.net.0.weight" in critic_state
    if not (fused_ckpt or separate_ckpt) or (critic.fused is not None) == fused_ckpt:
        return optim_state
    members, layers = critic.num_critics, critic.num_layers
    src = critic_param_names(fused_ckpt, members, layers)
    dst = critic_param_names(not fused_ckpt, members, layers)
    convert = critic_state_to_separate if fused_ckpt else critic_state_to_fused
    groups = optim_state["param_groups"]
    if len(groups) != 1 or len(groups[0]["params"]) != len(src):
        raise ValueError("the checkpoint's critic optimizer does not match its critic's "
                         "parameters; cannot convert it between fused and separate critics")
    ids, state = groups[0]["params"], optim_state["state"]
    new_state: dict[int, dict[str, Any]] = {}
    if state:
        if any(i not in state for i in ids):
            raise ValueError("the checkpoint's critic optimizer has state for only some "
                             "parameters; cannot convert it between fused and separate critics")
        per_param = [state[i] for i in ids]
        moments: dict[str, dict[str, torch.Tensor]] = {}
        shared: dict[str, Any] = {}
        for key, first in per_param[0].items():
            if isinstance(first, torch.Tensor) and first.dim() > 0:
                moments[key] = convert({n: p[key] for n, p in zip(src, per_param, strict=True)},
                                       members, layers)
            else:  # the step count, the same for every parameter
                shared[key] = first
        for idx, name in enumerate(dst):
            entry = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in shared.items()}
            entry.update({k: m[name] for k, m in moments.items()})
            new_state[idx] = entry
    group = dict(groups[0])
    group["params"] = list(range(len(dst)))
    return {"state": new_state, "param_groups": [group]}


def build_mtsac(
    *,
    obs_dim: int,
    action_dim: int,
    num_tasks: int,
    actor_hidden: list[int],
    critic_hidden: list[int],
    actor_lr: float,
    critic_lr: float,
    alpha_lr: float,
    init_alpha: float,
    hparams: SACHyperparams,
    actor_combiner: Combiner | None = None,
    critic_combiner: Combiner | None = None,
    log_std_min: float = -20.0,
    log_std_max: float = 2.0,
    log_prob_guard: float = 0.0,
    popart: bool = False,
    popart_beta: float = 3e-4,
    actor_arch: str = "mlp",
    critic_arch: str = "mlp",
    arch_cfg: object | None = None,
    distral: DistralHyperparams | None = None,
    pi0_hidden: list[int] | None = None,
    pi0_task_input: bool = False,
    tune_entropy: bool = True,
    num_critics: int = 2,
    num_atoms: int | None = None,
    v_min: float = -10.0,
    v_max: float = 10.0,
    reward_normalization: bool = False,
    fused_critics: bool = False,
    compile_mode: str = "off",
    device: torch.device | str = "cpu",
) -> MTSAC:
    """Build the networks, target critics, temperatures and Adam optimizers of an MT-SAC agent
    (with ``distral``: also π0, hidden sizes ``pi0_hidden`` or ``actor_hidden``, Adam at
    ``actor_lr``). ``num_critics`` critics, categorical over ``num_atoms`` atoms in
    ``[v_min, v_max]`` when ``num_atoms`` is given; ``reward_normalization``: BRC's per-task
    reward scaling to the bound ``min(−v_min, v_max)`` of that support. ``fused_critics``: the
    critics as one stacked ensemble (:class:`~mtrl.modules.policies.TwinQCritic`);
    ``compile_mode``: ``agent.compile`` (:mod:`mtrl.agents.compiling`; with ``graphs`` on CUDA
    the Adam optimizers are built ``capturable``, their step counts on the device)."""
    device = torch.device(device)
    mode, _ = resolve_compile_mode(compile_mode, device)
    # Graph capture needs the optimizers' step counters on the device (no host scalar).
    adam = functools.partial(torch.optim.Adam, capturable=mode == "graphs")
    actor = TanhGaussianActor(
        obs_dim, action_dim, num_tasks, actor_hidden,
        log_std_min=log_std_min, log_std_max=log_std_max, arch=actor_arch, arch_cfg=arch_cfg,
        log_prob_guard=log_prob_guard,
    ).to(device)
    # One set of PopArt statistics, shared by the online and the target critics.
    stats = PopArtStatistics(num_tasks, beta=popart_beta) if popart else None
    critic, critic_target = (
        TwinQCritic(obs_dim, action_dim, num_tasks, critic_hidden, num_critics, popart=stats,
                    arch=critic_arch, arch_cfg=arch_cfg, num_atoms=num_atoms, v_min=v_min,
                    v_max=v_max, fused=fused_critics).to(device)
        for _ in range(2)
    )
    scaler = None
    if reward_normalization:
        if num_atoms is None or not v_min < 0.0 < v_max:
            raise ValueError("reward normalization scales returns into a categorical "
                             "critic's support, which needs num_atoms and v_min < 0 < v_max")
        scaler = ReturnScaler(num_tasks, hparams.gamma, min(-v_min, v_max), device=device)
    critic_target.load_state_dict(critic.state_dict())
    log_alpha = nn.Parameter(
        torch.full((num_tasks,), float(np.log(init_alpha)), device=device)
    )
    part = None
    if distral is not None:
        pi0 = DistilledPolicy(
            (obs_dim,), num_tasks, action_dim=action_dim,
            hidden=list(actor_hidden if pi0_hidden is None else pi0_hidden),
            task_input=pi0_task_input, log_std_min=log_std_min, log_std_max=log_std_max,
            arch_cfg=arch_cfg,
        ).to(device)
        part = Distral(pi0, distral, adam(pi0.parameters(), lr=actor_lr))
    return MTSAC(
        actor,
        critic,
        critic_target,
        log_alpha,
        adam(actor.parameters(), lr=actor_lr),
        adam(critic.parameters(), lr=critic_lr),
        adam([log_alpha], lr=alpha_lr),
        hparams,
        actor_combiner=actor_combiner,
        critic_combiner=critic_combiner,
        distral=part,
        tune_entropy=tune_entropy,
        reward_scaler=scaler,
        compile_mode=compile_mode,
    )
