"""Cost of a full MT-SAC update with mtrl's PCGrad, against the mean combiner and a naive PCGrad.

Three MT-SAC agents with identical networks (default ``AgentConfig``: 400-400 ReLU actor and
twin critics on ``[obs, one_hot]``, Adam 3e-4, one temperature per task) and the same
task-stratified batches (128 samples per task, so batch 1280 at T=10 and 6400 at T=50), at
Meta-World shapes (obs 39, action 4), differing only in the combiner of actor and critic:

* ``mean``: ``(1/T) Σ_k L_k``, one backward (diagnostics off);
* ``pcgrad``: mtrl's :class:`~mtrl.optim.combiners.PCGradCombiner` — per-task gradients from
  one backward pass (hooked linear layers), projections from the ``T × T`` Gram matrix;
* ``naive`` (written below, no mtrl optim code): the usual implementation — one
  ``autograd.grad`` per task with ``retain_graph=True``, flattened gradient vectors, Algorithm 1
  as a double loop over tasks with vector projections, then the sum written back into ``.grad``.

Each round times one update of each agent (order rotating, CUDA synchronized around every
timing); ratios are medians of per-round paired ratios, robust to load drift on a shared
machine. ``pcgrad_vs_mean_t10`` / ``pcgrad_vs_mean_t50`` = PCGrad update time / mean update time
(lower is better); ``naive_vs_pcgrad_t50`` = naive / mtrl PCGrad (higher is better). The naive
agent is only run at T=50 where the ratio is asked for (and at T=10 for information).

    python benchmarks/pcgrad_speed.py --json runs/bench/pcgrad_speed.json [--device auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _common import pick_device, random_batch, timed
from torch import nn

from mtrl.agents import MTSAC, build_agent
from mtrl.config import AgentConfig, CombinerConfig

OBS_DIM = 39
ACTION_DIM = 4
PER_TASK = 128


class NaivePCGrad:
    """PCGrad as commonly written: T backward passes and vector projections in Python loops."""

    name = "naive-pcgrad"

    def watch(self, module: nn.Module) -> None:
        pass

    def backward(self, task_losses: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        num_tasks = task_losses.shape[0]
        params = [p for p in params if p.requires_grad]
        flat = []
        for k in range(num_tasks):
            grads = torch.autograd.grad(task_losses[k], params, retain_graph=k < num_tasks - 1,
                                        allow_unused=True)
            flat.append(torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, params, strict=True)
            ]))
        total = torch.zeros_like(flat[0])
        for i in range(num_tasks):
            g = flat[i].clone()
            for j in torch.randperm(num_tasks).tolist():
                if j == i:
                    continue
                d = torch.dot(g, flat[j])
                if d < 0:
                    g -= d / flat[j].pow(2).sum() * flat[j]
            total += g
        total /= num_tasks
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = total[offset:offset + n].view_as(p).clone()
            offset += n

    def report(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass




def _agent(num_tasks: int, combiner: str, device: torch.device) -> MTSAC:
    torch.manual_seed(0)
    cfg = AgentConfig(
        batch_size=num_tasks * PER_TASK,
        actor_combiner=combiner if combiner != "naive" else "mean",
        critic_combiner=combiner if combiner != "naive" else "mean",
        combiner=CombinerConfig(diagnostics_every=0),
    )
    agent = build_agent(cfg, obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=num_tasks,
                        device=device)
    if combiner == "naive":
        agent.actor_combiner = NaivePCGrad()  # type: ignore[assignment]
        agent.critic_combiner = NaivePCGrad()  # type: ignore[assignment]
        for m in (agent.actor, agent.critic):  # drop the hooks of the replaced mean combiners
            for sub in m.modules():
                sub._forward_hooks.clear()
    return agent




def measure(num_tasks: int, kinds: list[str], device: torch.device, rounds: int, warmup: int
            ) -> dict[str, list[float]]:
    agents = {k: _agent(num_tasks, k, device) for k in kinds}
    batches = [random_batch(num_tasks, PER_TASK, OBS_DIM, ACTION_DIM, device, seed)
               for seed in range(4)]
    for k in kinds:
        for w in range(warmup):
            agents[k].update(batches[w % len(batches)])
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]
        b = batches[r % len(batches)]
        for k in order:
            times[k].append(timed(lambda k=k, b=b: agents[k].update(b), device))
    return times


def paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds at T=10")
    parser.add_argument("--rounds-t50", type=int, default=5, help="timed rounds at T=50")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = pick_device(args.device)

    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "per_task": PER_TASK,
        "hidden": [400, 400],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    t10 = measure(10, ["mean", "pcgrad", "naive"], device, args.rounds, args.warmup)
    t50 = measure(50, ["mean", "pcgrad", "naive"], device, args.rounds_t50, args.warmup)
    out["pcgrad_vs_mean_t10"] = paired(t10["pcgrad"], t10["mean"])
    out["pcgrad_vs_mean_t50"] = paired(t50["pcgrad"], t50["mean"])
    out["naive_vs_pcgrad_t50"] = paired(t50["naive"], t50["pcgrad"])
    out["naive_vs_pcgrad_t10"] = paired(t10["naive"], t10["pcgrad"])
    for t, times in ((10, t10), (50, t50)):
        for k, v in times.items():
            out[f"{k}_update_ms_t{t}"] = 1e3 * statistics.median(v)
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
