"""Cost of a full MT-SAC update with each architecture, relative to the 400-400 one-hot MLP.

For MT10 and MT50 shapes (obs 39, action 4, 128 samples per task: batch 1280 / 6400), one MT-SAC
agent per architecture is built with ``build_agent`` — the actor and both critics use the
architecture, with the sizes of the mtrl presets (``mt10-mhsac``, ``mt10-soft-modular`` /
``mt50-soft-modular``, ``mt10-routing``, ``mt10-moe``) — and all agents are updated on the same
task-stratified batches in rotating order, CUDA synchronized around every timing.
``<arch>_vs_mlp_<bench>`` is the median over rounds of the paired ratio (arch update time /
MLP update time): how much more one gradient step costs with that architecture.

``multihead_stacked_vs_loop_mt50``: forward + backward of the per-task output heads alone (50
tasks × 128 samples, 400 inputs, 8 outputs = an actor's mean and log-std): mtrl's stacked
``[T, in, out]`` heads applied with one batched matmul on the stratified batch, divided by a
Python loop over 50 ``nn.Linear`` heads each applied to its task's slice (goal ≤ 0.5 on CPU).

``separate_stacked_vs_loop_mt10`` / ``_mt50``: forward + backward of one 39 → 400 → 400 → 8 MLP
per task (the ``separate`` architecture of Distral's task policies; 128 samples per task):
mtrl's stacked ``[T, in, out]`` layers divided by a Python loop over ``T`` ``nn.Sequential``
MLPs each on its task's slice. Measured on 2 CPU cores over several runs: 0.87-1.23 at T = 10,
1.02-1.13 at T = 50, i.e. no consistent gain or loss (unlike the small heads above, the loop's
Python overhead is negligible next to 400 × 400 matmuls). Not measured on a GPU.

    python benchmarks/arch_speed.py --json runs/bench/arch_speed.json [--device auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from _common import paired_median, pick_device, random_batch, timed
from torch import nn

from mtrl.agents import MTSAC, build_agent
from mtrl.modules.mlp import mlp
from mtrl.modules.nets import MultiHeadLinear, SeparateNet
from mtrl.presets import get_preset

OBS_DIM, ACTION_DIM, PER_TASK = 39, 4, 128
PRESET_OF = {
    "mlp": {"mt10": "mt10-mtsac", "mt50": "mt50-mtsac"},
    "multihead": {"mt10": "mt10-mhsac", "mt50": "mt10-mhsac"},
    "soft-modular": {"mt10": "mt10-soft-modular", "mt50": "mt50-soft-modular"},
    "routing": {"mt10": "mt10-routing", "mt50": "mt10-routing"},
    "moe": {"mt10": "mt10-moe", "mt50": "mt10-moe"},
}






def _agent(arch: str, bench: str, num_tasks: int, device: torch.device) -> MTSAC:
    cfg = get_preset(PRESET_OF[arch][bench]).agent
    cfg.batch_size = num_tasks * PER_TASK
    cfg.combiner.diagnostics_every = 0
    torch.manual_seed(0)
    return build_agent(cfg, obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=num_tasks,
                       device=device)


def update_ratios(bench: str, num_tasks: int, device: torch.device, rounds: int, warmup: int
                  ) -> dict[str, Any]:
    archs = list(PRESET_OF)
    agents = {a: _agent(a, bench, num_tasks, device) for a in archs}
    batches = [random_batch(num_tasks, PER_TASK, OBS_DIM, ACTION_DIM, device, s)
               for s in range(3)]
    for a in archs:
        for w in range(warmup):
            agents[a].update(batches[w % 3])
    times: dict[str, list[float]] = {a: [] for a in archs}
    for r in range(rounds):
        order = archs[r % len(archs):] + archs[: r % len(archs)]
        b = batches[r % 3]
        for a in order:
            times[a].append(timed(lambda a=a, b=b: agents[a].update(b), device))
    out: dict[str, Any] = {}
    for a in archs:
        params = sum(p.numel() for p in agents[a].actor.parameters())
        out[f"{a}_update_ms_{bench}"] = 1e3 * statistics.median(times[a])
        out[f"{a}_actor_params_{bench}"] = params
        if a != "mlp":
            out[f"{a}_vs_mlp_{bench}"] = statistics.median(
                x / y for x, y in zip(times[a], times["mlp"], strict=True))
    return out


def heads_ratio(device: torch.device, rounds: int) -> dict[str, Any]:
    num_tasks, fan_in, fan_out = 50, 400, 8
    torch.manual_seed(0)
    stacked = MultiHeadLinear(num_tasks, fan_in, fan_out).to(device)
    loop = nn.ModuleList(nn.Linear(fan_in, fan_out) for _ in range(num_tasks)).to(device)
    x = torch.randn(num_tasks * PER_TASK, fan_in, device=device, requires_grad=True)
    tid = torch.arange(num_tasks, device=device).repeat_interleave(PER_TASK)

    def run_stacked() -> None:
        stacked(x, tid, PER_TASK).square().sum().backward()

    def run_loop() -> None:
        outs = [head(x[k * PER_TASK:(k + 1) * PER_TASK]) for k, head in enumerate(loop)]
        torch.cat(outs).square().sum().backward()

    ratio, ms_stacked, ms_loop = paired_median(run_stacked, run_loop, device, rounds)
    return {
        "multihead_stacked_vs_loop_mt50": ratio,
        "multihead_stacked_ms_mt50": ms_stacked,
        "multihead_loop_ms_mt50": ms_loop,
    }


def separate_ratio(device: torch.device, rounds: int, num_tasks: int = 10) -> dict[str, Any]:
    hidden = [400, 400]
    tag = f"mt{num_tasks}"
    torch.manual_seed(0)
    stacked = SeparateNet(OBS_DIM, 2 * ACTION_DIM, num_tasks, hidden).to(device)
    loop = nn.ModuleList(mlp(OBS_DIM, hidden, 2 * ACTION_DIM) for _ in range(num_tasks))
    loop = loop.to(device)
    x = torch.randn(num_tasks * PER_TASK, OBS_DIM, device=device)
    tid = torch.arange(num_tasks, device=device).repeat_interleave(PER_TASK)

    def run_stacked() -> None:
        stacked(x, tid, PER_TASK).square().sum().backward()

    def run_loop() -> None:
        outs = [net(x[k * PER_TASK:(k + 1) * PER_TASK]) for k, net in enumerate(loop)]
        torch.cat(outs).square().sum().backward()

    ratio, ms_stacked, ms_loop = paired_median(run_stacked, run_loop, device, rounds)
    return {
        f"separate_stacked_vs_loop_{tag}": ratio,
        f"separate_stacked_ms_{tag}": ms_stacked,
        f"separate_loop_ms_{tag}": ms_loop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds at MT10 shapes")
    parser.add_argument("--rounds-mt50", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    device = pick_device(args.device)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "per_task": PER_TASK,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    out.update(heads_ratio(device, rounds=40))
    out.update(separate_ratio(device, rounds=40))
    out.update(separate_ratio(device, rounds=10, num_tasks=50))
    out.update(update_ratios("mt10", 10, device, args.rounds, args.warmup))
    out.update(update_ratios("mt50", 50, device, args.rounds_mt50, args.warmup))
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
