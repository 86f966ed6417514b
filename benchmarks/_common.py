"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from mtrl.data.replay import Batch


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA if present; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return torch.device(name)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of ``fn()``, with CUDA synchronized before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def paired_median(fn_a: Callable[[], Any], fn_b: Callable[[], Any], device: torch.device,
                  rounds: int, warmup: int = 5) -> tuple[float, float, float]:
    """``(median of time_a / time_b over rounds, median ms of a, median ms of b)``, the two
    timed alternately (order flipped every round) so that machine drift cancels."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta: list[float] = []
    tb: list[float] = []
    for r in range(rounds):
        pair = [(ta, fn_a), (tb, fn_b)]
        for acc, fn in pair if r % 2 == 0 else pair[::-1]:
            acc.append(timed(fn, device))
    ratio = statistics.median(a / b for a, b in zip(ta, tb, strict=True))
    return ratio, 1e3 * statistics.median(ta), 1e3 * statistics.median(tb)


def random_batch(num_tasks: int, per_task: int, obs_dim: int, action_dim: int,
                 device: torch.device, seed: int) -> Batch:
    """A task-stratified batch of random transitions (1% terminal)."""
    g = torch.Generator().manual_seed(seed)
    n = num_tasks * per_task
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g).to(device),
        action=(torch.rand(n, action_dim, generator=g) * 2 - 1).to(device),
        reward=torch.randn(n, generator=g).to(device),
        next_obs=torch.randn(n, obs_dim, generator=g).to(device),
        terminated=(torch.rand(n, generator=g) < 0.01).float().to(device),
        task_id=torch.arange(num_tasks, device=device).repeat_interleave(per_task),
        num_tasks=num_tasks,
    )
