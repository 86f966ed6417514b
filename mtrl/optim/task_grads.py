"""Per-task gradients of shared parameters from a single backward pass.

A task-stratified batch has its rows grouped by task (rows ``k·n … (k+1)·n − 1`` belong to task
``k``) and every agent loss in mtrl is a per-task mean of per-sample terms, so sample ``i`` only
enters its own task's loss. One backward pass of ``Σ_k L_k`` therefore gives, at the output of
every linear layer, the gradient of *its own task's* loss for each row. For a linear layer
``y = x Wᵀ + b`` the gradient of task ``k``'s loss is then

    ∂L_k/∂W = Σ_{i∈k} δ_iᵀ x_i  = (Δ_k)ᵀ X_k     ∂L_k/∂b = Σ_{i∈k} δ_i

— one batched matmul ``[T, out, n] @ [T, n, in]`` with the same arithmetic as the ordinary
weight gradient, instead of ``T`` backward passes. Forward hooks on the watched modules'
``nn.Linear`` layers keep each layer's input and output; the backward asks autograd for the
gradients at those outputs (not at the weights, which would be wasted work) and for the
gradients of the remaining parameters.

Parameters that no hooked linear layer owns (e.g. a free log-std vector) get their per-task
gradients from one vmapped backward over the task axis (``is_grads_batched``): correct for any
layer, but ``T`` times the cost of a backward, so architectures should keep their shared
parameters in linear layers or stacked weights handled here.

Task-specific parameters (those of submodules with ``mtrl_task_specific = True``, e.g. per-task
output heads) only receive gradient from their own task's rows; they get the plain gradient of
the combined objective and are never projected or reweighted across tasks (Yu et al. 2020,
Sec. 3: PCGrad acts on the shared parameters).

Assumptions, checked where cheap: the batch rows are in task-stratified order and no layer mixes
rows (no batch norm, no attention across samples); a hooked layer must see a 2-D input whose
row count is a multiple of the number of tasks, otherwise its parameters use the vmapped path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from mtrl.modules.mlp import EnsembleLinear

_Hookable = nn.Linear | EnsembleLinear

# Per module, at most this many recorded forwards are kept between two backward passes: a
# forward with grad whose graph is never differentiated must not pin activations forever.
_MAX_RECORDS = 16


@dataclass
class _Record:
    x: torch.Tensor
    y: torch.Tensor


@dataclass
class TaskGradients:
    """Per-task gradients of the shared parameters (one ``[T, *p.shape]`` tensor each) and the
    ordinary gradients of the task-specific ones, for one per-task loss vector."""

    shared: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    task_specific: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def gram(self) -> torch.Tensor:
        """``G Gᵀ`` of the per-task gradients flattened over all shared parameters: ``[T, T]``,
        accumulated layer by layer (no ``[T, P]`` concatenation)."""
        g: torch.Tensor | None = None
        for _, grads in self.shared:
            flat = grads.reshape(grads.shape[0], -1)
            part = flat @ flat.T
            g = part if g is None else g + part
        if g is None:
            raise ValueError("no shared parameter received a gradient")
        return g

    def apply(self, weights: torch.Tensor, task_specific_scale: float) -> None:
        """Accumulate ``Σ_k weights[k] · g_k`` into each shared parameter's ``.grad`` and
        ``task_specific_scale · g`` into each task-specific one."""
        for p, grads in self.shared:
            w = weights.to(grads.dtype)
            g = (w @ grads.reshape(grads.shape[0], -1)).view_as(p)
            _accumulate(p, g)
        for p, g in self.task_specific:
            _accumulate(p, g * task_specific_scale)


def _accumulate(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g.detach()
    else:
        p.grad.add_(g)


def _splittable(layer: nn.Module, r: _Record, num_tasks: int) -> bool:
    """Whether the rows of this recorded forward can be split into task blocks."""
    if isinstance(layer, EnsembleLinear):
        return r.y.dim() == 3 and r.y.shape[1] % num_tasks == 0
    return r.x.dim() == 2 and r.x.shape[0] % num_tasks == 0


def _per_task_grads(layer: nn.Module, x: torch.Tensor, delta: torch.Tensor, num_tasks: int
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-task weight and bias gradients of one recorded forward, from its input ``x`` and
    output gradient ``delta`` (the outer-product rule, task by task, in one einsum/bmm)."""
    if isinstance(layer, EnsembleLinear):
        # weight [E, in, out] (y_e = x_e W_e + b_e); x [B, in] shared or [E, B, in].
        e, b = delta.shape[0], delta.shape[1]
        n = b // num_tasks
        d = delta.reshape(e, num_tasks, n, -1)
        if x.dim() == 2:
            gw = torch.einsum("tni,etno->teio", x.reshape(num_tasks, n, -1), d)
        else:
            gw = torch.einsum("etni,etno->teio", x.reshape(e, num_tasks, n, -1), d)
        gb = d.sum(2).transpose(0, 1).unsqueeze(2)  # [T, E, 1, out]
        return gw, gb
    assert isinstance(layer, nn.Linear)
    n = x.shape[0] // num_tasks
    d = delta.reshape(num_tasks, n, -1)
    gw = torch.bmm(d.transpose(1, 2), x.reshape(num_tasks, n, -1))
    return gw, (d.sum(1) if layer.bias is not None else None)


class TaskGradientTracker:
    """Records linear-layer activations of watched modules while ``armed`` and turns one backward
    pass into per-task gradients (see the module docstring)."""

    def __init__(self) -> None:
        self.armed = False
        self._records: dict[nn.Module, list[_Record]] = {}
        self._task_specific: set[int] = set()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def watch(self, module: nn.Module) -> None:
        """Hook every ``nn.Linear`` of ``module`` (except those inside task-specific submodules)
        and remember its task-specific parameters."""
        for sub in module.modules():
            if getattr(sub, "mtrl_task_specific", False):
                self._task_specific.update(id(p) for p in sub.parameters())
        for sub in module.modules():
            if isinstance(sub, _Hookable) and id(sub.weight) not in self._task_specific \
                    and sub not in self._records:
                self._records[sub] = []
                self._handles.append(sub.register_forward_hook(self._hook))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._records.clear()

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
              ) -> None:
        if not self.armed or not torch.is_grad_enabled() or not output.requires_grad:
            return
        assert isinstance(module, _Hookable)
        if not module.weight.requires_grad:
            return  # frozen here (e.g. the critic inside the actor loss)
        recs = self._records[module]
        recs.append(_Record(inputs[0], output))
        if len(recs) > _MAX_RECORDS:
            del recs[0]

    def clear(self) -> None:
        for recs in self._records.values():
            recs.clear()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Arm the hooks for the forward passes inside the block."""
        prev, self.armed = self.armed, True
        try:
            yield
        finally:
            self.armed = prev

    def is_task_specific(self, p: torch.Tensor) -> bool:
        return id(p) in self._task_specific

    def compute(
        self,
        task_losses: torch.Tensor,
        params: Sequence[torch.Tensor],
        weights: torch.Tensor | None = None,
    ) -> TaskGradients:
        """Per-task gradients ``∇(λ_k L_k)`` of the shared ``params`` and the gradient of
        ``Σ_k λ_k L_k`` for the task-specific ones, for the loss vector ``task_losses`` [T] and
        detached weights ``λ`` (all ones if None). Consumes the graph and the recorded
        activations."""
        if task_losses.dim() != 1:
            raise ValueError(
                f"task_losses must have shape [num_tasks], got {tuple(task_losses.shape)}"
            )
        num_tasks = task_losses.shape[0]
        if weights is not None:
            weights = weights.detach()
        total = task_losses.sum() if weights is None else (weights * task_losses).sum()
        wanted = {id(p): p for p in params if p.requires_grad}

        # Which recorded layers can give per-task gradients by the outer-product rule.
        layer_recs: list[tuple[nn.Module, list[_Record]]] = []
        covered: set[int] = set()
        for layer, recs in self._records.items():
            assert isinstance(layer, _Hookable)
            if id(layer.weight) not in wanted or not recs:
                continue
            if all(_splittable(layer, r, num_tasks) for r in recs):
                layer_recs.append((layer, list(recs)))
                covered.add(id(layer.weight))
                if layer.bias is not None:
                    covered.add(id(layer.bias))
        self.clear()

        ts_params = [p for i, p in wanted.items() if i in self._task_specific]
        other = [p for i, p in wanted.items() if i not in covered and i not in self._task_specific]
        outputs = [r.y for _, recs in layer_recs for r in recs]

        inputs = outputs + ts_params
        grads: Sequence[torch.Tensor | None] = ()
        if inputs:
            grads = torch.autograd.grad(
                total, inputs, retain_graph=bool(other), allow_unused=True
            )
        out_grads, ts_grads = grads[: len(outputs)], grads[len(outputs):]

        result = TaskGradients()
        i = 0
        for layer, recs in layer_recs:
            gw: torch.Tensor | None = None
            gb: torch.Tensor | None = None
            for r in recs:
                delta = out_grads[i]
                i += 1
                if delta is None:  # a recorded forward that is not part of this loss
                    continue
                w_part, b_part = _per_task_grads(layer, r.x.detach(), delta, num_tasks)
                gw = w_part if gw is None else gw + w_part
                if b_part is not None:
                    gb = b_part if gb is None else gb + b_part
            weight, bias = layer.weight, layer.bias
            assert isinstance(weight, torch.Tensor)
            if gw is not None:
                result.shared.append((weight, gw))
                if isinstance(bias, torch.Tensor) and gb is not None:
                    result.shared.append((bias, gb))
        for p, g in zip(ts_params, ts_grads, strict=True):
            if g is not None:
                result.task_specific.append((p, g))

        if other:
            eye = torch.eye(num_tasks, device=task_losses.device, dtype=task_losses.dtype)
            if weights is not None:
                eye = eye * weights.to(eye.dtype)
            batched = torch.autograd.grad(
                task_losses, other, grad_outputs=eye, is_grads_batched=True, allow_unused=True
            )
            for p, g in zip(other, batched, strict=True):
                if g is not None:
                    result.shared.append((p, g))
        return result
