"""Gradient combiners: turn a per-task loss vector ``[num_tasks]`` into parameter gradients.

Agents never call ``backward`` on a scalar they reduced themselves; they hand the per-task loss
vector to a combiner. That is how PCGrad-style methods plug into any agent without subclassing
it. The contract:

* ``watch(module)`` once, for every network whose parameters the combiner will receive; this
  hooks its linear layers so that per-task gradients come from one backward pass
  (:mod:`mtrl.optim.task_grads`).
* ``backward(task_losses, params)`` once per update, after the forward pass that produced
  ``task_losses`` (shape ``[T]``, one mean loss per task of a task-stratified batch); it
  accumulates gradients into ``p.grad`` for ``params``. The objective is scaled as the mean over
  tasks, so every combiner gives the same gradient as ``mean`` when it has nothing to correct.
* ``report()`` returns what to log: scalar diagnostics, per-task values (e.g. loss weights) and,
  every ``diagnostics_every`` updates, the ``[T, T]`` cosine-similarity matrix of the per-task
  gradients of the shared parameters and the fraction of conflicting task pairs. Any combiner
  computes these diagnostics, ``mean`` included.
* ``state_dict()`` / ``load_state_dict()`` for combiners with state (loss weights, histories).

Subclasses of :class:`GradientCombiner` choose loss weights (``loss_weights``), how per-task
gradients are mixed (``mix``) and what they learn after the backward (``after_backward``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mtrl.config import CombinerConfig
from mtrl.optim.pcgrad import conflict_fraction, cosine_matrix, pcgrad_weights, random_orders
from mtrl.optim.task_grads import TaskGradients, TaskGradientTracker
from mtrl.registry import COMBINERS, register_combiner

if TYPE_CHECKING:
    from mtrl.modules.paco import CompositionalVectors


class Combiner(Protocol):
    name: str

    def watch(self, module: nn.Module) -> None: ...

    def backward(self, task_losses: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Accumulate gradients of ``params`` from ``task_losses`` (shape ``[num_tasks]``)
        into their ``.grad`` fields."""
        ...

    def report(self) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class GradientCombiner:
    """Base class: the mean objective ``(1/T) Σ_k λ_k L_k`` with loss weights ``λ`` (1 unless a
    subclass says otherwise) and optional per-task-gradient surgery and diagnostics."""

    name = "base"
    #: True if ``mix`` or ``after_backward`` needs the per-task gradients at every update.
    needs_task_grads = False

    def __init__(self, diagnostics_every: int = 0) -> None:
        if diagnostics_every < 0:
            raise ValueError(f"diagnostics_every={diagnostics_every} must be >= 0")
        self.diagnostics_every = diagnostics_every
        self.tracker = TaskGradientTracker()
        self.steps = 0
        self._cosine: torch.Tensor | None = None
        self._conflict: torch.Tensor | None = None
        self._arm()

    # ---------------------------------------------------------------- contract
    def watch(self, module: nn.Module) -> None:
        self.tracker.watch(module)

    def backward(self, task_losses: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        num_tasks = task_losses.shape[0]
        lam = self.loss_weights(task_losses)
        if self.tracker.armed:
            tg = self.tracker.compute(task_losses, params, weights=lam)
            if tg.shared:
                gram = tg.gram()
                if self._diagnostics_due():
                    self._cosine = cosine_matrix(gram.detach())
                    self._conflict = conflict_fraction(gram.detach())
                mix = self.mix(tg, gram)
                if mix is None:
                    mix = torch.ones(num_tasks, device=gram.device, dtype=gram.dtype)
                tg.apply(mix / num_tasks, 1.0 / num_tasks)
                self.after_backward(task_losses.detach(), gram.detach())
            elif self.needs_task_grads:
                raise ValueError(f"the {self.name} combiner balances gradients of shared "
                                 "parameters, and this network has none (one network per task)")
            else:
                # No shared parameter (one network per task): tasks cannot interfere, there
                # is nothing to project or to diagnose.
                ones = torch.ones(num_tasks, device=task_losses.device)
                tg.apply(ones / num_tasks, 1.0 / num_tasks)
                self.after_backward(task_losses.detach(), None)
        else:
            self.tracker.clear()
            weighted = task_losses if lam is None else lam * task_losses
            (weighted.sum() / num_tasks).backward()
            self.after_backward(task_losses.detach(), None)
        self.steps += 1
        self._arm()

    def report(self) -> dict[str, torch.Tensor]:
        """Diagnostics since the last call: ``cosine`` ``[T, T]`` and ``conflict_fraction``
        (only after a diagnostic update), plus subclass values."""
        out: dict[str, torch.Tensor] = {}
        if self._cosine is not None and self._conflict is not None:
            out["cosine"] = self._cosine
            out["conflict_fraction"] = self._conflict
            self._cosine = self._conflict = None
        out.update(self.extra_report())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self._arm()

    # ---------------------------------------------------------------- for subclasses
    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor | None:
        """Detached per-task weights ``λ`` of this update's objective (None: all ones)."""
        return None

    def mix(self, grads: TaskGradients, gram: torch.Tensor) -> torch.Tensor | None:
        """Coefficients ``w`` of the shared-parameter update ``(1/T) Σ_k w_k ∇(λ_k L_k)``
        given the per-task gradients and their Gram matrix (None: all ones)."""
        return None

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        """Learn from this update (e.g. adapt loss weights); ``gram`` is None when per-task
        gradients were not computed."""

    def extra_report(self) -> dict[str, torch.Tensor]:
        return {}

    # ---------------------------------------------------------------- internals
    def _diagnostics_due(self) -> bool:
        return self.diagnostics_every > 0 and self.steps % self.diagnostics_every == 0

    def _arm(self) -> None:
        # The forward pass of the next update runs before its backward: decide now whether
        # that forward must record activations.
        self.tracker.armed = self.needs_task_grads or self._diagnostics_due()


class MeanCombiner(GradientCombiner):
    """The standard multi-task objective: the gradient of the mean of the task losses."""

    name = "mean"


class PCGradCombiner(GradientCombiner):
    """PCGrad (Yu et al. 2020, Algorithm 1) on the shared parameters; see
    :mod:`mtrl.optim.pcgrad`. With the mean scaling of this module the update is
    ``(1/T) Σ_i g_i^PC``: equal to ``mean`` when no pair of task gradients conflicts.
    Task-specific parameters keep their own gradients. The random orders come from torch's
    global generator on the loss's device (seeded and checkpointed with the run)."""

    name = "pcgrad"
    needs_task_grads = True

    def mix(self, grads: TaskGradients, gram: torch.Tensor) -> torch.Tensor:
        orders = random_orders(gram.shape[0], device=gram.device)
        return pcgrad_weights(gram.detach(), orders).to(gram.dtype)


class PaCoMaskoutCombiner(GradientCombiner):
    """PaCo's loss maskout and w-reset (Sun, Zhang, Xu & Tomizuka 2022, "PaCo:
    Parameter-Compositional Multi-Task Reinforcement Learning", NeurIPS: the paper's mechanism
    for stable multi-task training; ``mask_extreme_task`` / ``reset_task_while_extreme`` in the
    authors' code).

    A task whose loss exceeds the threshold ``ε`` is *masked out* of this update: its loss
    weight is 0, so it sends no gradient to the shared parameters Φ nor to its own ``w_τ``
    (the objective stays ``(1/T) Σ_k λ_k L_k`` over all ``T`` tasks, as the authors zero the
    task's per-sample losses before the batch mean). Because PaCo keeps everything task-specific
    in ``w_τ``, the diverged task can then be restarted without touching the others: the
    compositional vector ``w_τ`` of every PaCo network this combiner watches
    (:class:`mtrl.modules.paco.CompositionalVectors`) is *reset* from the kept tasks' vectors
    (``interpolate``: a random convex combination; ``copy``: one of them at random; ``none``:
    mask only). The reset takes effect at the network's next forward pass, after this update's
    optimizer step (the authors reset after the update too), and leaves the optimizer's Adam
    moments of ``w_τ`` as they are (as the authors do).

    A task counts as over the threshold when ``L_τ > ε`` or ``L_τ`` is NaN. The authors test
    one summed actor + critic + temperature loss per task against ``ε = 3000`` and share one
    ``W`` between the actor and the critics; in mtrl each network has its own ``W`` and each
    combiner tests the loss it combines — the critic's squared TD error is what explodes when a
    task diverges. Their critic term is ``½ Σ_j (Q_j − y)²`` per sample (squared errors of both
    critics averaged with ALF's zero-padded second time step), which is mtrl's critic loss, so
    ε carries over unchanged. Masking works with any architecture; resets only with PaCo
    networks. No host synchronization: masks, counts and resets are tensor operations.
    ``report()`` gives ``masked``, the number of updates each task was masked out of so far."""

    name = "paco-maskout"

    def __init__(self, diagnostics_every: int = 0, threshold: float = 3000.0,
                 reset: str = "interpolate") -> None:
        from mtrl.config import PACO_RESETS

        if not threshold > 0:
            raise ValueError(f"threshold={threshold} must be > 0")
        if reset not in PACO_RESETS:
            raise ValueError(f"unknown reset {reset!r}; allowed: {', '.join(PACO_RESETS)}")
        self.threshold, self.reset = float(threshold), reset
        self._vectors: list[CompositionalVectors] = []
        self._mask: torch.Tensor | None = None
        self.masked: torch.Tensor | None = None
        super().__init__(diagnostics_every)

    def watch(self, module: nn.Module) -> None:
        from mtrl.modules.paco import CompositionalVectors

        super().watch(module)
        for sub in module.modules():
            if isinstance(sub, CompositionalVectors) and all(sub is not v for v in self._vectors):
                self._vectors.append(sub)

    def loss_weights(self, task_losses: torch.Tensor) -> torch.Tensor:
        losses = task_losses.detach()
        self._mask = ~(losses <= self.threshold)  # NaN counts as over the threshold
        return (~self._mask).to(losses.dtype)

    def after_backward(self, task_losses: torch.Tensor, gram: torch.Tensor | None) -> None:
        mask, self._mask = self._mask, None
        assert mask is not None, "loss_weights runs before after_backward"
        if self.reset != "none":
            for vectors in self._vectors:
                vectors.schedule_reset(mask, self.reset)
        count = mask.to(torch.float32)
        self.masked = count if self.masked is None else self.masked.to(count.device) + count

    def extra_report(self) -> dict[str, torch.Tensor]:
        return {} if self.masked is None else {"masked": self.masked.clone()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.masked is not None:
            state["masked"] = self.masked.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        masked = state.get("masked")
        self.masked = None if masked is None else torch.as_tensor(masked).clone()


def make_combiner(name: str, cfg: CombinerConfig | None = None) -> GradientCombiner:
    """The registered combiner ``name`` (:data:`mtrl.registry.COMBINERS`) with the options of
    ``cfg`` (defaults if None)."""
    from mtrl.errors import ConfigError

    try:
        entry = COMBINERS.get(name, "combiner")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return entry.build(cfg or CombinerConfig())


register_combiner("mean", lambda cfg: MeanCombiner(cfg.diagnostics_every))
register_combiner("pcgrad", lambda cfg: PCGradCombiner(cfg.diagnostics_every))
register_combiner("paco-maskout", lambda cfg: PaCoMaskoutCombiner(
    cfg.diagnostics_every, threshold=cfg.paco_loss_threshold, reset=cfg.paco_reset))
