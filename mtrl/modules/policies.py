"""Task-conditioned actor and critic networks for continuous control."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtrl.modules.distributions import gaussian_log_prob
from mtrl.modules.mlp import EnsembleMLP
from mtrl.modules.nets import TaskNet, build_net
from mtrl.modules.popart import PopArtStatistics, TaskValueHead
from mtrl.modules.task_encoding import OneHotTaskEncoder

_LOG_2 = math.log(2.0)


def tanh_gaussian_log_prob(
    u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, guard: float = 0.0
) -> torch.Tensor:
    """log π(tanh(u)) for u ~ N(mean, exp(log_std)²), summed over action dims.

    Change of variables for a = tanh(u) (Haarnoja et al. 2018, "Soft Actor-Critic", App. C,
    Eq. 21): log π(a|s) = log μ(u|s) − Σᵢ log(1 − tanh²(uᵢ)), with the stable identity
    log(1 − tanh²(u)) = 2·(log 2 − u − softplus(−2u)). ``guard`` > 0 computes
    log(1 − tanh²(u) + guard) instead, as stable-baselines3 and CleanRL do with 1e-6: equal
    while |u| < ~6, bounded (and flat) far in saturation, where the exact term grows as 2|u|.
    """
    log_mu = gaussian_log_prob(u, mean, log_std)
    if guard > 0.0:
        log_det = torch.log(1.0 - torch.tanh(u).pow(2) + guard).sum(-1)
    else:
        log_det = (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)
    return log_mu - log_det


class TanhGaussianActor(nn.Module):
    """π(a | s, task): a Gaussian over pre-squash actions, squashed by tanh into [-1, 1] (SAC,
    Haarnoja et al. 2018). A task-conditioned network (``arch``: an MLP on ``[obs, one_hot]``
    by default, or any of :data:`mtrl.modules.nets.ARCHITECTURES`) outputs the mean and the
    log-std, which is clamped to ``[log_std_min, log_std_max]``. ``log_prob_guard``: see
    :func:`tanh_gaussian_log_prob` (0: the exact density)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        hidden: Sequence[int],
        *,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        arch: str = "mlp",
        arch_cfg: object | None = None,
        log_prob_guard: float = 0.0,
    ) -> None:
        super().__init__()
        self.body: TaskNet = build_net(arch, obs_dim, 2 * action_dim, num_tasks, hidden, arch_cfg)
        self.action_dim = action_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.log_prob_guard = float(log_prob_guard)

    def forward(
        self, obs: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(obs, task_id, per_task)
        mean, log_std = out.split(self.action_dim, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(
        self, obs: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample ``a = tanh(mean + std·ε)`` and its log-probability."""
        a, log_prob, _, _, _ = self.rsample(obs, task_id, per_task)
        return a, log_prob

    def rsample(
        self, obs: torch.Tensor, task_id: torch.Tensor, per_task: int | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample` plus the pre-squash sample ``u`` and the Gaussian's mean and log-std
        (what Distral needs to score the action under another policy). ``noise``: the standard
        normal ``ε`` ``[B, action_dim]`` (drawn here if None; compiled updates pass it in so
        that it comes from the device's generator, :mod:`mtrl.agents.compiling`)."""
        mean, log_std = self(obs, task_id, per_task)
        eps = torch.randn_like(mean) if noise is None else noise
        u = mean + torch.exp(log_std) * eps
        log_prob = tanh_gaussian_log_prob(u, mean, log_std, self.log_prob_guard)
        return torch.tanh(u), log_prob, u, mean, log_std

    def deterministic(self, obs: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """The mode used for evaluation: ``tanh(mean)``."""
        mean, _ = self(obs, task_id)
        return torch.tanh(mean)


def categorical_projection(values: torch.Tensor, probs: torch.Tensor, support: torch.Tensor
                           ) -> torch.Tensor:
    """Project the distribution with mass ``probs [B, K]`` on the points ``values [B, K]`` onto
    the fixed, evenly spaced ``support [A]`` (C51's projection, Bellemare et al. 2017,
    "A Distributional Perspective on Reinforcement Learning", Algorithm 1): each value is clipped
    to ``[v_min, v_max]``, and its mass is split between the two neighbouring atoms ``l ≤ b ≤ u``
    of its fractional index ``b = (v − v_min)/Δz`` in proportion ``(u − b, b − l)``; a value
    exactly on an atom gives it all its mass. Returns ``[B, A]``; each row sums to the row sum of
    ``probs``."""
    num_atoms = support.numel()
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (num_atoms - 1)
    b = ((values.clamp(v_min, v_max) - v_min) / dz).clamp(0.0, num_atoms - 1)
    lower, upper = b.floor(), b.ceil()
    to_lower = probs * (upper - b + (lower == upper).to(b.dtype))
    to_upper = probs * (b - lower)
    out = torch.zeros(values.shape[0], num_atoms, dtype=probs.dtype, device=probs.device)
    out.scatter_add_(1, lower.long(), to_lower)
    out.scatter_add_(1, upper.long(), to_upper)
    return out


class TwinQCritic(nn.Module):
    """``num_critics`` independent Q-functions Q_j(s, a, task), each a task-conditioned network
    on ``[obs, action]`` (an MLP on ``[obs, action, one_hot]`` by default). Returns
    ``[num_critics, B]``.

    The members are separate networks by default: on CPU two plain matmul chains measured ~10%
    faster than one batched (``EnsembleMLP``) chain for 400-400 critics at batch 1280. With
    ``fused`` (plain MLP members on ``[obs, action, one_hot]``, no PopArt) they are one stacked
    ensemble instead, :class:`~mtrl.modules.mlp.EnsembleMLP`, applied with one batched matmul
    per layer: fewer, larger kernels, which is what a launch-bound GPU update wants. Both forms
    compute the same function of the same weights (member ``j``'s layer ``i`` weight is the
    transpose of ``fused.layers[i].weight[j]``); each loads the other's state dict
    (:func:`critic_state_to_fused`, :func:`critic_state_to_separate`).

    With ``popart`` statistics each member is a network to ``hidden[-1]`` features, a ReLU and a
    :class:`TaskValueHead` whose outputs are *normalized* values ``n_k``; ``forward`` returns the
    unnormalized ``Q = σ_k n_k + μ_k`` and :meth:`normalized` the raw head outputs (van Hasselt et
    al. 2016; Hessel et al. 2019). The statistics object may be shared with a target critic.

    With ``num_atoms`` each member is *categorical* (C51, Bellemare et al. 2017; BRC, Nauman et
    al. 2025): its network outputs ``num_atoms`` logits of a distribution over the fixed support
    ``z = linspace(v_min, v_max, num_atoms)`` (:meth:`logits`), and ``forward`` returns the
    expectation ``Q_j = Σ_i softmax(logits_j)_i z_i``. A fixed support and PopArt's rescaled
    heads do not compose (the rescaling that preserves a scalar output has no counterpart for a
    distribution on fixed atoms), so the two are exclusive.
    """

    support: torch.Tensor | None

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        hidden: Sequence[int],
        num_critics: int = 2,
        popart: PopArtStatistics | None = None,
        *,
        arch: str = "mlp",
        arch_cfg: object | None = None,
        num_atoms: int | None = None,
        v_min: float = -10.0,
        v_max: float = 10.0,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if num_critics < 1:
            raise ValueError(f"num_critics={num_critics} must be >= 1")
        self.num_critics = num_critics
        self.num_layers = len(hidden) + 1
        in_dim = obs_dim + action_dim
        self.popart = popart
        self.fused: EnsembleMLP | None = None
        if fused:
            reason = fused_critic_blocker(arch, getattr(arch_cfg, "task_encoder", "one-hot"),
                                          popart is not None)
            if reason is not None:
                raise ValueError(f"fused critics {reason}")
        if num_atoms is None:
            self.register_buffer("support", None)
        else:
            if popart is not None:
                raise ValueError("a categorical critic (fixed support) cannot use PopArt")
            if num_atoms < 2 or not v_min < v_max:
                raise ValueError(f"a categorical critic needs num_atoms >= 2 and v_min < v_max, "
                                 f"got {num_atoms}, [{v_min}, {v_max}]")
            self.register_buffer("support", torch.linspace(v_min, v_max, num_atoms),
                                 persistent=False)
        # Checkpoints of either form load into the other (module docstring).
        self._register_load_state_dict_pre_hook(self._convert_loaded_state)
        if fused:
            out = 1 if num_atoms is None else num_atoms
            self.task_encoder = OneHotTaskEncoder(num_tasks)
            self.fused = EnsembleMLP(num_critics, in_dim + num_tasks, hidden, out)
        elif popart is None:
            out = 1 if num_atoms is None else num_atoms
            self.qs = nn.ModuleList(
                build_net(arch, in_dim, out, num_tasks, hidden, arch_cfg)
                for _ in range(num_critics)
            )
        else:
            if popart.mu.shape[0] != num_tasks:
                raise ValueError("PopArt statistics and critic have different task counts")
            self.trunks = nn.ModuleList(
                build_net(arch, in_dim, hidden[-1], num_tasks, hidden[:-1], arch_cfg)
                for _ in range(num_critics)
            )
            self.heads = nn.ModuleList(
                TaskValueHead(hidden[-1], num_tasks) for _ in range(num_critics)
            )

    @property
    def categorical(self) -> bool:
        return self.support is not None

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor,
        per_task: int | None = None,
    ) -> torch.Tensor:
        if self.support is not None:
            probs = torch.softmax(self.logits(obs, action, task_id, per_task), dim=-1)
            return probs @ self.support
        if self.fused is not None:
            return self._fused_forward(obs, action, task_id).squeeze(-1)
        if self.popart is None:
            x = torch.cat([obs, action], dim=-1)
            return torch.stack([q(x, task_id, per_task).squeeze(-1) for q in self.qs])
        n = self.normalized(obs, action, task_id, per_task)
        return self.popart.denormalize_ids(n, task_id)

    def logits(
        self, obs: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor,
        per_task: int | None = None,
    ) -> torch.Tensor:
        """Logits ``[num_critics, B, num_atoms]`` of the categorical members (only with
        ``num_atoms``)."""
        if self.support is None:
            raise RuntimeError("logits() needs a critic built with num_atoms (categorical)")
        if self.fused is not None:
            return self._fused_forward(obs, action, task_id)
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([q(x, task_id, per_task) for q in self.qs])

    def _fused_forward(self, obs: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor
                       ) -> torch.Tensor:
        """``[num_critics, B, out]`` of the fused ensemble on ``[obs, action, one_hot]`` (the
        separate members' input, :class:`~mtrl.modules.nets.MLPNet`)."""
        assert self.fused is not None
        return self.fused(torch.cat([obs, action, self.task_encoder(task_id)], dim=-1))

    def _convert_loaded_state(self, state_dict: dict[str, torch.Tensor], prefix: str,
                              *args: object) -> None:
        """Load hook: a state dict of the other form (fused / separate members) is converted
        in place into this one's keys and layouts."""
        fused_key = f"{prefix}fused.layers.0.weight"
        separate_key = f"{prefix}qs.0.net.0.weight"
        if self.fused is not None and separate_key in state_dict:
            new = critic_state_to_fused(state_dict, self.num_critics, self.num_layers, prefix)
        elif self.fused is None and self.popart is None and fused_key in state_dict:
            new = critic_state_to_separate(state_dict, self.num_critics, self.num_layers,
                                           prefix)
        else:
            return
        state_dict.clear()
        state_dict.update(new)

    def normalized(
        self, obs: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor,
        per_task: int | None = None,
    ) -> torch.Tensor:
        """PopArt-normalized values ``[num_critics, B]`` (only with ``popart``)."""
        if self.popart is None:
            raise RuntimeError("normalized() needs a critic built with PopArt statistics")
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([
            head(torch.relu(trunk(x, task_id, per_task)), task_id)
            for trunk, head in zip(self.trunks, self.heads, strict=True)
        ])

    def report(self) -> dict[str, torch.Tensor]:
        """Routing/gating diagnostics of the first member."""
        if self.fused is not None:
            return {}
        first = self.qs[0] if self.popart is None else self.trunks[0]
        assert isinstance(first, TaskNet)
        return first.report()


def fused_critic_blocker(arch: str, task_encoder: str, popart: bool) -> str | None:
    """Why critics of this kind cannot be fused (None: they can). Fused critics are plain MLP
    members on ``[obs, action, one_hot]`` without PopArt heads."""
    encoder = task_encoder
    if arch != "mlp":
        return f"need the plain mlp critic architecture, not {arch!r}"
    if encoder != "one-hot":
        return f"need the one-hot task encoder, not {encoder!r}"
    if popart:
        return "cannot use PopArt (per-member value heads)"
    return None


def _separate_key(member: int, layer: int, kind: str) -> str:
    return f"qs.{member}.net.{2 * layer}.{kind}"


def _fused_key(layer: int, kind: str) -> str:
    return f"fused.layers.{layer}.{kind}"


def critic_state_to_fused(state: dict[str, torch.Tensor], num_members: int, num_layers: int,
                          prefix: str = "") -> dict[str, torch.Tensor]:
    """A separate-member critic state (``qs.j.net.2i.weight [out, in]``, ``.bias [out]``; also
    any per-parameter tensors keyed alike, e.g. optimizer moments) in the fused layout
    (``fused.layers.i.weight [E, in, out]``, ``.bias [E, 1, out]``); other keys are kept."""
    out = {k: v for k, v in state.items() if not k.startswith(f"{prefix}qs.")}
    for i in range(num_layers):
        w = [state[prefix + _separate_key(j, i, "weight")] for j in range(num_members)]
        b = [state[prefix + _separate_key(j, i, "bias")] for j in range(num_members)]
        out[prefix + _fused_key(i, "weight")] = torch.stack([t.transpose(0, 1) for t in w])
        out[prefix + _fused_key(i, "bias")] = torch.stack(b).unsqueeze(1)
    return out


def critic_state_to_separate(state: dict[str, torch.Tensor], num_members: int,
                             num_layers: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """The inverse of :func:`critic_state_to_fused`."""
    out = {k: v for k, v in state.items() if not k.startswith(f"{prefix}fused.")}
    for i in range(num_layers):
        w = state[prefix + _fused_key(i, "weight")]
        b = state[prefix + _fused_key(i, "bias")]
        if w.shape[0] != num_members:
            raise ValueError(f"fused critic state has {w.shape[0]} members, this critic "
                             f"{num_members}")
        for j in range(num_members):
            out[prefix + _separate_key(j, i, "weight")] = w[j].transpose(0, 1).contiguous()
            out[prefix + _separate_key(j, i, "bias")] = b[j, 0].contiguous()
    return out


def critic_param_names(fused: bool, num_members: int, num_layers: int) -> list[str]:
    """The names of a plain MLP critic's parameters in ``parameters()`` order (the order of
    its optimizer's state), for either form."""
    if fused:
        return [_fused_key(i, k) for i in range(num_layers) for k in ("weight", "bias")]
    return [_separate_key(j, i, k) for j in range(num_members) for i in range(num_layers)
            for k in ("weight", "bias")]
