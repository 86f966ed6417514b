"""Policy distillation: per-task teachers into one multi-task student.

Policy Distillation (Rusu et al. 2016, "Policy Distillation", ICLR) trains a student network
on states labelled by single-task teachers. With teacher outputs ``q^T`` (Q-values of a DQN or
the logits of a policy) and student logits ``q^S``, the losses are

* Eq. 2 (MSE):  ``L = Σ_i ‖q_i^T − q_i^S‖²``;
* Eq. 3 (KL):   ``L = Σ_i softmax(q_i^T/τ) · ln( softmax(q_i^T/τ) / softmax(q_i^S) )``,

where a small temperature (τ = 0.01) sharpens a Q-network's values into a near-greedy policy
(the paper's best setting for DQN teachers); τ = 1 keeps a policy teacher's own distribution.
For Gaussian policies the KL is the closed form of ``KL(N_T ‖ N_S)`` over diagonal Gaussians;
for tanh-squashed policies (SAC) it is taken on the pre-tanh variables, which is exact since the
KL divergence is invariant under the bijection ``tanh``. ``loss="mse"`` on continuous actions is
the squared error between the teacher's deterministic action and the student's.

Actor-Mimic (Parisotto et al. 2016, "Actor-Mimic: Deep Multitask and Transfer Reinforcement
Learning", ICLR) adds a *feature regression* objective (Eq. 3): a per-task linear regressor
``f_i`` maps the student's hidden features ``h_S(s)`` to teacher ``i``'s features ``h_{T_i}(s)``,

    L_FR^i = ‖ f_i(h_S(s)) − h_{T_i}(s) ‖²,

and the student minimizes ``L_policy + β · L_FR`` (Eq. 4, ``β = feature_coef``); gradient flows
into the student's features and into ``f_i``.

Multi-task: batches are task-stratified (``num_tasks`` blocks of ``per_task`` rows), each block
labelled by its own task's teacher; the loss is a vector of per-task means, averaged. Teachers
are frozen (``requires_grad_(False)``, ``torch.no_grad``): only the student and the regressors
learn.

A teacher is anything with the :class:`Teacher` interface (tensors in, :class:`TeacherOutput`
out); the ones read from stable-baselines3 zips and mtrl run directories live in
:mod:`mtrl.teachers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrl.agents.base import PolicyOutput, TaskIds
from mtrl.modules.cnn import make_torso, torso_input
from mtrl.modules.distributions import categorical_kl as _categorical_kl
from mtrl.modules.distributions import categorical_sample, gaussian_kl
from mtrl.modules.nets import TaskNet, build_net

DISTILL_LOSSES = ("kl", "mse")
POLICY_TEMPERATURE = 1.0
Q_TEMPERATURE = 0.01  # Rusu et al. 2016, Sec. 4.2: the best KL temperature for DQN teachers


# ==============================================================================================
# Loss functions
# ==============================================================================================
def categorical_kl(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float | Tensor = 1.0
) -> Tensor:
    """``KL(softmax(z_T / τ) ‖ softmax(z_S))`` per sample, ``[B]`` (Rusu et al. 2016, Eq. 3).

    ``temperature`` is a float or a tensor broadcastable to ``[B, 1]`` (one τ per row)."""
    return _categorical_kl(teacher_logits / temperature, student_logits)


def logits_mse(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """``‖z_T − z_S‖²`` per sample, ``[B]`` (Rusu et al. 2016, Eq. 2, on Q-values/logits)."""
    return (teacher_logits - student_logits).pow(2).sum(-1)


def action_mse(teacher_action: Tensor, student_action: Tensor) -> Tensor:
    """``‖a_T − a_S‖²`` per sample, ``[B]``: the squared error between deterministic actions."""
    return (teacher_action - student_action).pow(2).sum(-1)


def feature_regression_loss(predicted: Tensor, teacher_features: Tensor,
                            mask: Tensor | None = None) -> Tensor:
    """Actor-Mimic feature regression (Parisotto et al. 2016, Eq. 3), per sample ``[B]``:
    ``‖f_i(h_S) − h_T‖²``. ``mask`` (``[B, F]``, 0/1) leaves out padded feature columns when
    teachers of different feature sizes share one ``[B, F_max]`` tensor."""
    err = (predicted - teacher_features).pow(2)
    if mask is not None:
        err = err * mask
    return err.sum(-1)


class TaskRegressors(nn.Module):
    """Per-task linear regressors ``f_i: R^{F_S} → R^{F_i}`` (Actor-Mimic, Parisotto et al.
    2016, Eq. 3), stacked as ``weight [T, F_S, F_max]`` / ``bias [T, F_max]`` with a 0/1 column
    ``mask [T, F_max]`` for teachers whose feature size ``F_i`` is below ``F_max``: on a
    task-stratified batch all tasks are applied with one ``baddbmm``. Initialized like
    ``nn.Linear``. Task-specific: task ``i``'s regressor sees only task ``i``'s rows."""

    mtrl_task_specific = True
    mask: Tensor

    def __init__(self, in_dim: int, out_dims: Sequence[int]) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dims = [int(d) for d in out_dims]
        t, f_max = len(self.out_dims), max(self.out_dims)
        self.weight = nn.Parameter(torch.empty(t, in_dim, f_max))
        self.bias = nn.Parameter(torch.empty(t, f_max))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        mask = torch.zeros(t, f_max)
        for i, d in enumerate(self.out_dims):
            mask[i, :d] = 1.0
        self.register_buffer("mask", mask)

    @property
    def num_tasks(self) -> int:
        return len(self.out_dims)

    def forward(self, h: Tensor, per_task: int) -> tuple[Tensor, Tensor]:
        """``(f(h) [B, F_max], mask [B, F_max])`` for a task-stratified ``h [B, F_S]``."""
        ht = h.view(self.num_tasks, per_task, self.in_dim)
        out = torch.baddbmm(self.bias.unsqueeze(1), ht, self.weight)
        mask = self.mask.unsqueeze(1).expand(-1, per_task, -1)
        return out.reshape(-1, out.shape[-1]), mask.reshape(-1, mask.shape[-1])


# ==============================================================================================
# Teachers
# ==============================================================================================
# What a teacher says about a batch of its task's observations (``logits`` are Q-values when
# the teacher's ``kind`` is ``"q"``; ``mean``/``log_std`` are pre-tanh when it is ``squashed``).
TeacherOutput = PolicyOutput


class Teacher:
    """A frozen single-task policy. ``output(obs)`` on device tensors (the env's own
    observation layout, float32 or uint8 images), ``act(obs)`` on numpy arrays giving env
    actions. Attributes: ``discrete``, ``kind`` (``"policy"`` or ``"q"``), ``squashed`` (tanh
    Gaussian), ``feature_dim`` (None without features) and ``source`` (a description)."""

    discrete: bool
    kind: str = "policy"
    squashed: bool = False
    feature_dim: int | None = None
    source: str = ""

    def output(self, obs: Tensor) -> TeacherOutput:
        raise NotImplementedError

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source}, discrete={self.discrete}, "
                f"kind={self.kind}, squashed={self.squashed}, feature_dim={self.feature_dim})")


# ==============================================================================================
# Student
# ==============================================================================================
StudentOut = Tensor | tuple[Tensor, Tensor]


class StudentPolicy(nn.Module):
    """The multi-task student: a torso (:class:`~mtrl.modules.cnn.NatureCNN` for ``[C, H, W]``
    images, flatten otherwise), a task-conditioned body ``build_net(arch, feat, hidden[-1],
    num_tasks, hidden[:-1])`` + ReLU whose output are the student's features ``h_S`` (what
    Actor-Mimic regresses onto teacher features), and a linear output layer: logits ``[B, A]``
    (``num_actions``) or a Gaussian mean and log-std ``[B, D]`` each (``action_dim``; log-std
    clamped to ``[log_std_min, log_std_max]``; actions ``tanh(u)`` when ``squash``).

    ``forward(obs, task_id, per_task=None) -> (out, features)`` with ``out`` the logits or the
    pair ``(mean, log_std)``."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_tasks: int,
        *,
        num_actions: int | None = None,
        action_dim: int | None = None,
        hidden: Sequence[int],
        arch: str = "mlp",
        arch_cfg: object | None = None,
        torso: str = "auto",
        squash: bool = True,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (Gaussian)")
        hidden = list(hidden)
        if not hidden:
            raise ValueError("hidden must have at least one layer (the student's features)")
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.num_tasks = num_tasks
        self.discrete = num_actions is not None
        self.num_actions = num_actions
        self.action_dim = action_dim
        self.squash = bool(squash)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.torso, feat = make_torso(self.obs_shape, torso)
        self.body: TaskNet = build_net(arch, feat, hidden[-1], num_tasks, hidden[:-1], arch_cfg)
        self.feature_dim = hidden[-1]
        out = num_actions if num_actions is not None else 2 * int(action_dim or 0)
        self.head = nn.Linear(hidden[-1], out)

    def features(self, obs: Tensor, task_id: Tensor, per_task: int | None = None) -> Tensor:
        x = self.torso(torso_input(self.torso, obs))
        return torch.relu(self.body(x, task_id, per_task))

    def forward(self, obs: Tensor, task_id: Tensor, per_task: int | None = None
                ) -> tuple[StudentOut, Tensor]:
        h = self.features(obs, task_id, per_task)
        out = self.head(h)
        if self.discrete:
            return out, h
        mean, log_std = out.chunk(2, dim=-1)
        return (mean, log_std.clamp(self.log_std_min, self.log_std_max)), h

    def mode(self, out: StudentOut) -> Tensor:
        """The deterministic action: argmax, or ``tanh(mean)`` (``squash``) / the mean clipped
        to [-1, 1]."""
        if isinstance(out, Tensor):
            return out.argmax(-1)
        mean = out[0]
        return torch.tanh(mean) if self.squash else mean.clamp(-1.0, 1.0)

    def sample(self, out: StudentOut) -> Tensor:
        """An action from the policy: Gumbel-max for logits; ``u = μ + σ ε`` then ``tanh(u)``
        (``squash``) or ``u`` clipped to [-1, 1]."""
        if isinstance(out, Tensor):
            return categorical_sample(out)
        mean, log_std = out
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u) if self.squash else u.clamp(-1.0, 1.0)


# ==============================================================================================
# Distiller agent
# ==============================================================================================
@dataclass
class DistillHyperparams:
    """``loss``: ``"kl"`` (Rusu et al. 2016 Eq. 3; closed-form Gaussian KL for continuous
    actions) or ``"mse"`` (Eq. 2 on logits/Q-values; deterministic actions for continuous).
    ``temperature``: τ of the teacher softmax; None = 1 for policy teachers and 0.01 for
    Q-value teachers. ``feature_coef``: β of Actor-Mimic's feature regression (0 = off).
    ``grad_clip``: global gradient-norm clip (None = off)."""

    loss: str = "kl"
    temperature: float | None = None
    feature_coef: float = 0.0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.loss not in DISTILL_LOSSES:
            raise ValueError(f"loss={self.loss!r} is not valid; allowed: "
                             f"{', '.join(DISTILL_LOSSES)}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0 (or None)")
        if self.feature_coef < 0:
            raise ValueError(f"feature_coef={self.feature_coef!r} must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip={self.grad_clip!r} must be > 0 (or None)")


class DistillBatch(Protocol):
    """Any task-stratified, task-major batch with these fields (e.g. ``mtrl.data.replay.Batch``)."""

    @property
    def obs(self) -> Tensor: ...

    @property
    def task_id(self) -> Tensor: ...

    @property
    def num_tasks(self) -> int: ...


class Distiller:
    """Distils per-task teachers into a :class:`StudentPolicy` (see the module docstring).
    Receives the student and its optimizer; teachers are attached with :meth:`set_teachers`
    (index = task id). ``update`` returns detached 0-dim tensors (no host sync)."""

    def __init__(self, student: StudentPolicy, optim: torch.optim.Optimizer,
                 hparams: DistillHyperparams | None = None) -> None:
        self.student = student
        self.optim = optim
        self.hp = hparams or DistillHyperparams()
        self.num_tasks = student.num_tasks
        self.discrete = student.discrete
        self.device = next(student.parameters()).device
        self.teachers: list[Teacher] = []
        self.regressors: TaskRegressors | None = None
        self.regressor_optim: torch.optim.Optimizer | None = None
        self._pending_regressors: dict[str, Any] | None = None
        self._temperature: Tensor | None = None
        self._squashed: Tensor | None = None
        self._task_ids = TaskIds(self.device)

    # ------------------------------------------------------------------ teachers
    def set_teachers(self, teachers: Sequence[Teacher]) -> None:
        """Attach one teacher per task (index = task id) and check that they fit the student.
        With ``feature_coef > 0`` this builds the Actor-Mimic regressors (sized by the
        teachers' features) and their Adam optimizer (the student's learning rate)."""
        teachers = list(teachers)
        if len(teachers) != self.num_tasks:
            raise ValueError(f"{len(teachers)} teachers for a student of {self.num_tasks} tasks: "
                             "give one teacher per task, in task-id order")
        for k, t in enumerate(teachers):
            if t.discrete != self.discrete:
                kind = "discrete" if self.discrete else "continuous"
                raise ValueError(f"teacher {k} ({t.source}) is "
                                 f"{'discrete' if t.discrete else 'continuous'} but the "
                                 f"student has {kind} actions")
            if not self.discrete and self.hp.loss == "kl" and t.squashed != self.student.squash:
                raise ValueError(
                    f"teacher {k} ({t.source}) has squashed={t.squashed} but the student has "
                    f"squash={self.student.squash}: the Gaussian KL compares pre-tanh "
                    f"distributions only when both agree; set the student's squash to "
                    f"{t.squashed} (or use loss='mse')"
                )
        mapped = [f"{k} ({t.source})" for k, t in enumerate(teachers)
                  if getattr(t, "action_map", None) is not None]
        if mapped and self.hp.loss == "mse":
            raise ValueError(f"teachers {', '.join(mapped)} have fewer actions than the env: "
                             "their missing actions have no logit to regress; use loss='kl'")
        if self.hp.feature_coef > 0:
            missing = [f"{k} ({t.source})" for k, t in enumerate(teachers)
                       if t.feature_dim is None]
            if missing:
                raise ValueError(
                    f"feature_coef={self.hp.feature_coef} needs teacher features, but teachers "
                    f"{', '.join(missing)} provide none; set feature_coef=0"
                )
            dims = [int(t.feature_dim or 0) for t in teachers]
            if self.regressors is None or self.regressors.out_dims != dims:
                self.regressors = TaskRegressors(self.student.feature_dim, dims).to(self.device)
                lr = float(self.optim.param_groups[0]["lr"])
                self.regressor_optim = torch.optim.Adam(self.regressors.parameters(), lr=lr)
            if self._pending_regressors is not None:
                self._load_regressors(self._pending_regressors)
                self._pending_regressors = None
        default = [Q_TEMPERATURE if t.kind == "q" else POLICY_TEMPERATURE for t in teachers]
        temps = [self.hp.temperature or d for d in default]
        self._temperature = torch.tensor(temps, dtype=torch.float32, device=self.device)
        self._squashed = torch.tensor([t.squashed for t in teachers], device=self.device)
        self.teachers = teachers

    def _require_teachers(self) -> list[Teacher]:
        if not self.teachers:
            raise RuntimeError("no teachers attached: call set_teachers() first")
        return self.teachers

    @torch.no_grad()
    def teacher_outputs(self, obs: Tensor, num_tasks: int) -> TeacherOutput:
        """Teacher outputs for a task-stratified ``obs``: block ``k`` labelled by teacher
        ``k``; features padded to the widest teacher (zeros)."""
        teachers = self._require_teachers()
        per_task = obs.shape[0] // num_tasks
        outs = [teachers[k].output(obs[k * per_task:(k + 1) * per_task])
                for k in range(num_tasks)]

        def cat(name: str) -> Tensor | None:
            parts = [getattr(o, name) for o in outs]
            return None if any(p is None for p in parts) else torch.cat(parts).float()

        features = None
        if self.hp.feature_coef > 0:
            width = max(int(o.features.shape[-1]) for o in outs if o.features is not None)
            features = torch.cat([
                F.pad(o.features.float(), (0, width - o.features.shape[-1]))
                for o in outs if o.features is not None
            ])
        return TeacherOutput(logits=cat("logits"), mean=cat("mean"), log_std=cat("log_std"),
                             features=features)

    def teacher_act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False
                    ) -> np.ndarray:
        """Env actions, each row from its own task's teacher."""
        teachers = self._require_teachers()
        obs = np.asarray(obs)
        task_id = np.asarray(task_id, dtype=np.int64)
        out: np.ndarray | None = None
        for k in np.unique(task_id):
            rows = np.flatnonzero(task_id == k)
            a = np.asarray(teachers[int(k)].act(obs[rows], deterministic=deterministic))
            if out is None:
                out = np.empty((len(task_id), *a.shape[1:]), dtype=a.dtype)
            out[rows] = a
        assert out is not None
        return out

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The student's env actions for a batch of observations."""
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device)
        tid = self._task_ids(task_id)
        if deterministic:
            was = self.student.training
            self.student.eval()
            try:
                out, _ = self.student(obs_t, tid)
            finally:
                self.student.train(was)
            action = self.student.mode(out)
        else:
            out, _ = self.student(obs_t, tid)
            action = self.student.sample(out)
        if self.discrete:
            return action.cpu().numpy().astype(np.int64)
        return action.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ learning
    def losses(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Per-sample and per-task loss terms (no parameter update)."""
        t = int(batch.num_tasks)
        if t != self.num_tasks:
            raise ValueError(f"batch has {t} tasks, student {self.num_tasks}")
        obs = batch.obs
        n = obs.shape[0] // t
        if n * t != obs.shape[0]:
            raise ValueError(f"batch of {obs.shape[0]} rows is not {t} equal task blocks")
        teacher = self.teacher_outputs(obs, t)
        out, h = self.student(obs, batch.task_id, n)
        result: dict[str, Tensor] = {}
        if isinstance(out, Tensor):
            assert teacher.logits is not None
            if self.hp.loss == "kl":
                assert self._temperature is not None
                tau = self._temperature.repeat_interleave(n).unsqueeze(-1)
                distill = categorical_kl(teacher.logits, out, tau)
            else:
                distill = logits_mse(teacher.logits, out)
            result["agreement"] = (teacher.logits.argmax(-1) == out.argmax(-1)).float()
        else:
            mean, log_std = out
            assert teacher.mean is not None and teacher.log_std is not None
            if self.hp.loss == "kl":
                distill = gaussian_kl(teacher.mean, teacher.log_std, mean, log_std)
            else:
                # the student's unclipped mean when unsquashed: clipping would stop its gradient
                pred = torch.tanh(mean) if self.student.squash else mean
                distill = action_mse(self._teacher_mode(teacher), pred)
            diff = (self._teacher_mode(teacher) - self.student.mode(out).detach()).abs()
            result["action_diff"] = diff.mean(-1)
            result["agreement"] = (diff <= 0.05).all(-1).float()
        result[self.hp.loss] = distill
        total = distill
        if self.hp.feature_coef > 0:
            if self.regressors is None or teacher.features is None:
                raise RuntimeError("feature regression needs teachers with features "
                                   "(set_teachers builds the regressors)")
            pred_f, mask = self.regressors(h, n)
            feat = feature_regression_loss(pred_f, teacher.features, mask)
            result["feature"] = feat
            total = total + self.hp.feature_coef * feat
        result["per_task"] = total.view(t, n).mean(1)
        return result

    def _teacher_mode(self, teacher: TeacherOutput) -> Tensor:
        """Teachers' deterministic actions in [-1, 1] (tanh of the mean, or the clipped mean),
        per row's teacher."""
        assert teacher.mean is not None and self._squashed is not None
        n = teacher.mean.shape[0] // len(self.teachers)
        rows = self._squashed.repeat_interleave(n).unsqueeze(-1)
        return torch.where(rows, torch.tanh(teacher.mean), teacher.mean.clamp(-1.0, 1.0))

    def update(self, batch: DistillBatch) -> dict[str, Tensor]:
        """One gradient step of the student (and the regressors) on a stratified batch."""
        out = self.losses(batch)
        loss = out["per_task"].mean()
        self.optim.zero_grad(set_to_none=True)
        if self.regressor_optim is not None:
            self.regressor_optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if self.hp.grad_clip is not None:
            params = list(self.student.parameters())
            if self.regressors is not None:
                params += list(self.regressors.parameters())
            grad_norm = nn.utils.clip_grad_norm_(params, self.hp.grad_clip).detach()
        self.optim.step()
        if self.regressor_optim is not None and self.hp.feature_coef > 0:
            self.regressor_optim.step()
        metrics = {"loss": loss.detach()}
        for key in (self.hp.loss, "feature", "agreement", "action_diff"):
            if key in out:
                metrics[key] = out[key].detach().mean()
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        return metrics

    def task_metrics(self) -> dict[str, Tensor]:
        return {}

    def architecture_reports(self) -> dict[str, dict[str, Tensor]]:
        return {"policy": self.student.body.report()}

    def combiner_reports(self) -> dict[str, dict[str, Tensor]]:
        return {}

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "student": self.student.state_dict(),
            "optim": self.optim.state_dict(),
        }
        if self.regressors is not None and self.regressor_optim is not None:
            state["regressors"] = {
                "net": self.regressors.state_dict(),
                "optim": self.regressor_optim.state_dict(),
                "out_dims": list(self.regressors.out_dims),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the student and its optimizer. Regressor weights load now if the regressors
        exist, else when :meth:`set_teachers` builds them (so a teacher-less Distiller, as
        evaluation builds, loads any checkpoint)."""
        self.student.load_state_dict(state["student"])
        self.optim.load_state_dict(state["optim"])
        reg = state.get("regressors")
        if reg is not None:
            if self.regressors is not None:
                self._load_regressors(reg)
            else:
                self._pending_regressors = reg
        self._task_ids.clear()

    def _load_regressors(self, reg: dict[str, Any]) -> None:
        assert self.regressors is not None and self.regressor_optim is not None
        if list(reg["out_dims"]) != self.regressors.out_dims:
            raise ValueError(f"saved feature regressors have teacher feature sizes "
                             f"{reg['out_dims']}, the teachers {self.regressors.out_dims}")
        self.regressors.load_state_dict(reg["net"])
        self.regressor_optim.load_state_dict(reg["optim"])

    def train(self) -> None:
        self.student.train()

    def eval(self) -> None:
        self.student.eval()


def build_distiller(
    *,
    obs_shape: Sequence[int],
    num_tasks: int,
    num_actions: int | None = None,
    action_dim: int | None = None,
    hidden: Sequence[int],
    arch: str = "mlp",
    arch_cfg: object | None = None,
    torso: str = "auto",
    squash: bool = True,
    lr: float = 1e-3,
    hparams: DistillHyperparams | None = None,
    device: torch.device | str = "cpu",
) -> Distiller:
    """A :class:`Distiller` with a fresh :class:`StudentPolicy` on ``device`` and Adam."""
    student = StudentPolicy(
        obs_shape, num_tasks, num_actions=num_actions, action_dim=action_dim, hidden=hidden,
        arch=arch, arch_cfg=arch_cfg, torso=torso, squash=squash,
    ).to(device)
    optim = torch.optim.Adam(student.parameters(), lr=lr)
    return Distiller(student, optim, hparams)


# ==============================================================================================
# Data path: who acts while the states are collected
# ==============================================================================================
class DistillBehaviour:
    """Who acts while distilling (``data``): the teachers, the student (DAgger, Ross et al.
    2011: the teachers label the student's own states), or per env and step the teacher with
    probability ``teacher_prob`` (``mix``). The warm-up steps are collected the same way
    (``warm`` is ignored)."""

    def __init__(self, agent: Distiller, rng: np.random.Generator, data: str,
                 teacher_prob: float) -> None:
        if data not in ("teacher", "student", "mix"):
            raise ValueError(f"unknown distillation data {data!r}; allowed: teacher, student, "
                             "mix")
        self.agent = agent
        self.rng = rng
        self.data = data
        self.teacher_prob = teacher_prob
        self.warm = True

    def act(self, obs: np.ndarray, task_id: np.ndarray) -> np.ndarray:
        agent = self.agent
        if self.data == "teacher":
            return agent.teacher_act(obs, task_id)
        if self.data == "student":
            return agent.act(obs, task_id)
        use_teacher = np.asarray(self.rng.random(obs.shape[0]) < self.teacher_prob)
        student = agent.act(obs, task_id)
        if not use_teacher.any():
            return student
        teacher = agent.teacher_act(obs, task_id)
        mask = use_teacher.reshape(-1, *([1] * (student.ndim - 1)))
        return np.where(mask, teacher, student).astype(student.dtype)


class TeacherActor:
    """Acts with a distiller's teachers (each env by its task's teacher): the reference a
    distillation run is evaluated against."""

    def __init__(self, agent: Distiller) -> None:
        self.agent = agent

    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False
            ) -> np.ndarray:
        return self.agent.teacher_act(obs, task_id, deterministic)
