"""Cost of one mtrl MT-SAC update relative to a minimal plain-PyTorch SAC update.

What is compared, at MT10 shapes (obs 39, action 4, 10 tasks, batch 1280 = 128 per task):

* mtrl: ``agent.update(buffer.sample(128))`` with the agent from ``mtrl.agents.build_agent``
  (default ``AgentConfig``: 400-400 ReLU actor and twin critics, Adam 3e-4, gamma 0.99,
  tau 0.005, one temperature per task) and a filled ``MultiTaskReplayBuffer`` on the device, so
  the stratified sampling is part of the timed step.
* plain: a short single-file SAC written below with no mtrl code: an ``nn.Sequential`` actor
  (49→400→400→8) on ``[obs, one_hot]``, two separate ``nn.Sequential`` critics (53→400→400→1) on
  ``[obs, action, one_hot]`` with target copies updated by Polyak averaging, a per-task
  ``log_alpha`` vector indexed by task, Adam optimizers and the standard SAC losses; its batch is
  1280 uniform random indices into plain preallocated tensors of the same total size.

Why it is fair: both sides have the same parameter counts (checked below), the same batch
size, the same optimizer steps (critic, actor through frozen critics, temperatures, Polyak
update), draw their batch from a device-resident buffer of the same size filled with the same
random data, and run on the same device, threads and process. Both are warmed up; then timed
repetitions alternate between them (the order flips every round, so slow drift of the machine
hits both alike) and CUDA is synchronized around every timing. ``mtsac_vs_plain`` is the median
over rounds of the paired ratio mtrl/plain (robust to load that changes between rounds; the
ratio of the two median times is reported too). < 1 means mtrl is faster than the reference.

    python benchmarks/update_speed.py --json runs/bench/update_speed.json [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import pick_device, timed
from torch import nn

from mtrl.agents import MTSAC, build_agent
from mtrl.config import AgentConfig
from mtrl.data.replay import MultiTaskReplayBuffer

OBS_DIM = 39
ACTION_DIM = 4
NUM_TASKS = 10
PER_TASK = 128
BATCH = NUM_TASKS * PER_TASK
HIDDEN = 400
LR = 3e-4
GAMMA = 0.99
TAU = 0.005
TARGET_ENTROPY = -float(ACTION_DIM)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, out_dim),
    )


class PlainSAC:
    """Minimal multi-task SAC with per-task temperatures and a flat-tensor replay buffer."""

    def __init__(self, data: dict[str, torch.Tensor], device: torch.device) -> None:
        self.device = device
        self.actor = _mlp(OBS_DIM + NUM_TASKS, 2 * ACTION_DIM).to(device)
        self.q1 = _mlp(OBS_DIM + ACTION_DIM + NUM_TASKS, 1).to(device)
        self.q2 = _mlp(OBS_DIM + ACTION_DIM + NUM_TASKS, 1).to(device)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.log_alpha = torch.zeros(NUM_TASKS, device=device, requires_grad=True)
        self.q_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.target_params = [*self.q1_target.parameters(), *self.q2_target.parameters()]
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=LR)
        self.q_optim = torch.optim.Adam(self.q_params, lr=LR)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=LR)
        # Replay: plain preallocated tensors on the device.
        self.obs = data["obs"].to(device)
        self.action = data["action"].to(device)
        self.reward = data["reward"].to(device)
        self.next_obs = data["next_obs"].to(device)
        self.terminated = data["terminated"].to(device)
        self.task = data["task"].to(device)
        self.size = self.obs.shape[0]

    def policy(self, obs: torch.Tensor, one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(torch.cat([obs, one_hot], dim=1)).chunk(2, dim=1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = -0.5 * ((u - mean) * torch.exp(-log_std)).pow(2) - log_std - _HALF_LOG_2PI
        # tanh correction, log(1 - tanh(u)^2) in its numerically stable form
        log_prob = log_prob - 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))
        return torch.tanh(u), log_prob.sum(1)

    def update(self) -> None:
        idx = torch.randint(0, self.size, (BATCH,), device=self.device)
        obs, action, reward = self.obs[idx], self.action[idx], self.reward[idx]
        next_obs, terminated, task = self.next_obs[idx], self.terminated[idx], self.task[idx]
        one_hot = F.one_hot(task, NUM_TASKS).float()
        alpha = self.log_alpha.detach().exp()[task]

        with torch.no_grad():
            next_action, next_log_prob = self.policy(next_obs, one_hot)
            x_next = torch.cat([next_obs, next_action, one_hot], dim=1)
            q_next = torch.min(self.q1_target(x_next), self.q2_target(x_next)).squeeze(1)
            y = reward + GAMMA * (1.0 - terminated) * (q_next - alpha * next_log_prob)
        x = torch.cat([obs, action, one_hot], dim=1)
        q_loss = F.mse_loss(self.q1(x).squeeze(1), y) + F.mse_loss(self.q2(x).squeeze(1), y)
        self.q_optim.zero_grad()
        q_loss.backward()
        self.q_optim.step()

        for p in self.q_params:
            p.requires_grad_(False)
        new_action, log_prob = self.policy(obs, one_hot)
        x_pi = torch.cat([obs, new_action, one_hot], dim=1)
        q_pi = torch.min(self.q1(x_pi), self.q2(x_pi)).squeeze(1)
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()
        for p in self.q_params:
            p.requires_grad_(True)

        alpha_loss = -(self.log_alpha[task] * (log_prob.detach() + TARGET_ENTROPY)).mean()
        self.alpha_optim.zero_grad()
        alpha_loss.backward()
        self.alpha_optim.step()

        with torch.no_grad():
            for p, p_target in zip(self.q_params, self.target_params, strict=True):
                p_target.lerp_(p, TAU)


def _random_transitions(per_task: int, seed: int) -> dict[str, torch.Tensor]:
    """The same random data for both buffers, task-major (task k's rows are one block)."""
    g = torch.Generator().manual_seed(seed)
    n = NUM_TASKS * per_task
    return {
        "obs": torch.randn(n, OBS_DIM, generator=g),
        "action": torch.rand(n, ACTION_DIM, generator=g) * 2.0 - 1.0,
        "reward": torch.randn(n, generator=g),
        "next_obs": torch.randn(n, OBS_DIM, generator=g),
        "terminated": (torch.rand(n, generator=g) < 0.01).float(),
        "task": torch.arange(NUM_TASKS).repeat_interleave(per_task),
    }


def _fill_mtrl_buffer(buffer: MultiTaskReplayBuffer, data: dict[str, torch.Tensor]) -> None:
    n = data["obs"].shape[0]
    chunk = 10_000
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        buffer.add(
            data["obs"][sl].numpy(),
            data["action"][sl].numpy(),
            data["reward"][sl].numpy(),
            data["next_obs"][sl].numpy(),
            data["terminated"][sl].numpy(),
            data["task"][sl].numpy(),
        )






def _num_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def run(device: torch.device, repeats: int, warmup: int, per_task_fill: int) -> dict[str, Any]:
    data = _random_transitions(per_task_fill, seed=0)

    torch.manual_seed(0)
    agent: MTSAC = build_agent(
        AgentConfig(), obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, device=device
    )
    buffer = MultiTaskReplayBuffer(
        NUM_TASKS, NUM_TASKS * per_task_fill, (OBS_DIM,), ACTION_DIM, device=device, seed=0
    )
    _fill_mtrl_buffer(buffer, data)
    torch.manual_seed(0)
    plain = PlainSAC(data, device)
    del data

    sizes = {
        "actor_params": (_num_params(agent.actor), _num_params(plain.actor)),
        "critic_params": (_num_params(agent.critic), _num_params(plain.q1, plain.q2)),
    }
    for key, (ours, ref) in sizes.items():
        if ours != ref:
            raise RuntimeError(f"{key}: mtrl {ours} != plain {ref}; not the same networks")

    def mtrl_update() -> None:
        agent.update(buffer.sample(PER_TASK))

    for _ in range(warmup):
        mtrl_update()
        plain.update()

    t_mtrl: list[float] = []
    t_plain: list[float] = []
    for r in range(repeats):
        if r % 2 == 0:
            t_mtrl.append(timed(mtrl_update, device))
            t_plain.append(timed(plain.update, device))
        else:
            t_plain.append(timed(plain.update, device))
            t_mtrl.append(timed(mtrl_update, device))

    med_mtrl = statistics.median(t_mtrl)
    med_plain = statistics.median(t_plain)
    paired = statistics.median(a / b for a, b in zip(t_mtrl, t_plain, strict=True))
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "mtsac_vs_plain": paired,
        "ratio_of_medians": med_mtrl / med_plain,
        "mtrl_update_ms": 1e3 * med_mtrl,
        "plain_update_ms": 1e3 * med_plain,
        "batch": BATCH,
        "per_task": PER_TASK,
        "num_tasks": NUM_TASKS,
        "obs_dim": OBS_DIM,
        "action_dim": ACTION_DIM,
        "hidden": [HIDDEN, HIDDEN],
        "buffer_transitions": NUM_TASKS * per_task_fill,
        "actor_params": sizes["actor_params"][0],
        "critic_params": sizes["critic_params"][0],
        "repeats": repeats,
        "warmup": warmup,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=30, help="timed updates of each side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates of each side")
    parser.add_argument(
        "--per-task-fill", type=int, default=20_000, help="random transitions per task"
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.per_task_fill < 1:
        parser.error("--repeats and --per-task-fill must be positive")

    result = run(pick_device(args.device), args.repeats, args.warmup, args.per_task_fill)
    print(
        f"mtsac_vs_plain = {result['mtsac_vs_plain']:.2f} "
        f"(mtrl {result['mtrl_update_ms']:.1f} ms, plain {result['plain_update_ms']:.1f} ms, "
        f"medians; ratio of medians {result['ratio_of_medians']:.2f}; device {result['device']})"
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
