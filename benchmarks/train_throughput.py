"""Training throughput: MT-SAC updates/s eager vs compiled vs graph-captured, per preset.

What is measured, for the ``mt10-mtsac`` and ``mt50-mtsac`` presets (their own sizes: obs 39,
action 4, 10 / 50 tasks, batch 1280 / 1250, 400-400 networks, Adam 3e-4):

* one *update* is ``agent.update(buffer.sample(per_task))`` with the agent from
  ``mtrl.agents.build_agent`` and a ``MultiTaskReplayBuffer`` on the device filled with random
  transitions, so the stratified sampling on the device is part of the timed step;
* variants, all in this process on the same device, built from the same seed:
  ``eager`` (``agent.compile=off``), ``compiled`` (``default``: torch.compile of the update's
  phases, LeanRL's approach; mtrl/agents/compiling.py), ``graphs`` (CUDA only:
  ``mode="reduce-overhead"``, CUDA graphs, capturable Adam) and ``other-critics`` (eager with
  the other critic form than ``agent.sac.fused_critics=auto`` picks on this device: fused on
  CPU, separate on CUDA), so the automatic choice of fused critics is measured where it is made;
* the compiled variants are warmed up (the compile time is reported), then timed blocks of
  ``--updates`` updates alternate between the variants (the order rotates every round, so slow
  drift of the machine hits all alike; CUDA is synchronized around every block). Reported per
  variant: updates/s (median over rounds) and its ratio to ``eager`` (median over rounds of
  the paired per-round ratios; > 1 means faster than eager).

Projected wall-clock of each preset's full budget (``total_steps`` of the preset) from the
fastest variant: the number of updates the run makes (one update per vector step after the
warm-up, ``updates_per_step`` = 1, one env per task) divided by its updates/s. Assumption:
env stepping, acting and evaluation are *not* included: the update's share of the wall-clock, a
lower bound. With ``--end-to-end PRESET`` the real data path on the preset's Meta-World envs
is timed too (sequential vs pipelined collector, :mod:`overlap_speed`), and the projection from
its env steps/s includes env time (evaluation still excluded). The synthetic overlap check of
``overlap_speed.py`` (toy env and fake update of 5 ms each) runs first unless ``--no-overlap``.

    python benchmarks/train_throughput.py --json runs/bench/train_throughput.json [--device auto]
    python benchmarks/train_throughput.py --presets mt10-mtsac --rounds 5   # quicker
    python benchmarks/train_throughput.py --end-to-end mt10-mtsac --workers 8   # GPU machine
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import pick_device, timed

from mtrl import config as C
from mtrl.agents import build_agent
from mtrl.data.replay import MultiTaskReplayBuffer
from mtrl.presets import get_preset

OBS_DIM = 39
ACTION_DIM = 4
PRESETS = ("mt10-mtsac", "mt50-mtsac")

# ---------------------------------------------------------------------------------------------
# End to end (env stepping + updates), from benchmarks/overlap_speed.py


def end_to_end(preset: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Env steps/s of the real MT-SAC data path (act, store, one update per vector step) on
    the preset's Meta-World envs, sequential vs pipelined collector
    (:func:`overlap_speed.measure_end_to_end`, paired rounds); ``env_steps_per_sec`` is the
    faster of the two."""
    from overlap_speed import measure_end_to_end

    res = measure_end_to_end(iterations=args.e2e_iterations, rounds=args.e2e_rounds,
                             workers=args.workers, device=device.type, preset=preset,
                             threads=args.threads)
    res["env_steps_per_sec"] = max(res["sequential_env_steps_per_s"],
                                   res["pipelined_env_steps_per_s"])
    return res


def _fill(buffer: MultiTaskReplayBuffer, per_task: int, seed: int) -> None:
    """Random transitions, task-major, added in chunks (as collected vector steps would be)."""
    rng = np.random.default_rng(seed)
    n = buffer.num_tasks * per_task
    task = np.repeat(np.arange(buffer.num_tasks), per_task)
    for lo in range(0, n, 20_000):
        sl = slice(lo, min(lo + 20_000, n))
        m = sl.stop - sl.start
        buffer.add(rng.standard_normal((m, OBS_DIM)).astype(np.float32),
                   rng.uniform(-1, 1, (m, ACTION_DIM)).astype(np.float32),
                   rng.standard_normal(m).astype(np.float32),
                   rng.standard_normal((m, OBS_DIM)).astype(np.float32),
                   (rng.random(m) < 0.01).astype(np.float32), task[sl])


def _variants(device: torch.device) -> dict[str, dict[str, str]]:
    """Variant name → ``agent.compile`` and ``agent.sac.fused_critics``."""
    other = "off" if device.type == "cuda" else "on"  # the form auto does not pick here
    out = {"eager": {"compile": "off", "fused": "auto"},
           "compiled": {"compile": "default", "fused": "auto"}}
    if device.type == "cuda":
        out["graphs"] = {"compile": "graphs", "fused": "auto"}
    out["other-critics"] = {"compile": "off", "fused": other}
    return out


def _projection(cfg: C.TrainConfig, num_tasks: int, updates_per_sec: float) -> dict[str, Any]:
    """Updates of the preset's full run and their wall-clock at ``updates_per_sec``."""
    num_envs = num_tasks * cfg.env.envs_per_task
    vec_steps = math.ceil(cfg.total_steps / num_envs)
    warm_vec = math.ceil(cfg.warmup_steps / num_envs)
    updates = (vec_steps - warm_vec) * cfg.updates_per_step
    seconds = updates / updates_per_sec
    return {"total_steps": cfg.total_steps, "updates": updates,
            "updates_per_sec": updates_per_sec, "hours": seconds / 3600.0,
            "assumption": "one update per vector step after the warm-up; env stepping, "
                          "acting and evaluation not included (update time only)"}


def run_preset(name: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    cfg = get_preset(name)
    num_tasks = len(C.task_names(cfg.env))
    per_task = cfg.agent.batch_size // num_tasks
    # Every variant compiles its own graphs; start from empty compile caches per preset so
    # that no variant runs into the compiler's per-function recompile limit.
    torch._dynamo.reset()
    buffer = MultiTaskReplayBuffer(num_tasks, num_tasks * args.fill, (OBS_DIM,), ACTION_DIM,
                                   device=device, seed=0)
    _fill(buffer, args.fill, seed=0)
    agents: dict[str, Any] = {}
    compile_s: dict[str, float] = {}
    info: dict[str, Any] = {}
    for vname, v in _variants(device).items():
        acfg = copy.deepcopy(cfg.agent)
        acfg.compile = v["compile"]
        acfg.sac.fused_critics = v["fused"]
        torch.manual_seed(0)
        agent = build_agent(acfg, obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=num_tasks,
                            device=device)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            agent.update(buffer.sample(per_task))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compile_s[vname] = time.perf_counter() - t0
        agents[vname] = agent
        info[vname] = {"fused_critics": agent.critic.fused is not None,
                       "compile": agent.compile_info}

    def block(agent: Any) -> Callable[[], None]:
        def fn() -> None:
            for _ in range(args.updates):
                agent.update(buffer.sample(per_task))
        return fn

    names = list(agents)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(timed(block(agents[n]), device) / args.updates)
    ups = {n: 1.0 / statistics.median(t) for n, t in times.items()}
    ratio = {n: statistics.median(e / t for e, t in zip(times["eager"], times[n], strict=True))
             for n in names}
    best = max((n for n in names if n != "other-critics"), key=lambda n: ups[n])
    result: dict[str, Any] = {
        "preset": name, "num_tasks": num_tasks, "batch": per_task * num_tasks,
        "hidden": list(cfg.agent.critic_hidden), "updates_per_sec": ups,
        "speedup_vs_eager": ratio, "warmup_seconds": compile_s, "variants": info,
        "fastest": best, "projection": _projection(cfg, num_tasks, ups[best]),
    }
    if name in args.end_to_end:
        e2e = end_to_end(name, device, args)
        result["end_to_end"] = e2e
        result["projection_end_to_end"] = {
            "hours": cfg.total_steps / e2e["env_steps_per_sec"] / 3600.0,
            "env_steps_per_sec": e2e["env_steps_per_sec"],
            "collector": ("pipelined" if e2e["pipelined_env_steps_per_s"]
                          >= e2e["sequential_env_steps_per_s"] else "vector"),
        }
    return result


def _print(res: dict[str, Any]) -> None:
    ups, ratio = res["updates_per_sec"], res["speedup_vs_eager"]
    parts = [f"{n} {ups[n]:.1f}/s" + ("" if n == "eager" else f" (x{ratio[n]:.2f})")
             for n in ups]
    print(f"{res['preset']} ({res['num_tasks']} tasks, batch {res['batch']}): "
          + ", ".join(parts))
    p = res["projection"]
    print(f"  projected full budget: {p['updates']:,} updates ({p['total_steps']:,} env steps) "
          f"at {p['updates_per_sec']:.1f} updates/s ({res['fastest']}) = {p['hours']:.1f} h; "
          f"assumes {p['assumption']}")
    if "projection_end_to_end" in res:
        e = res["projection_end_to_end"]
        print(f"  projected end to end: {e['hours']:.1f} h at {e['env_steps_per_sec']:.0f} "
              f"env steps/s ({e['collector']} collector; evaluation not included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per variant")
    parser.add_argument("--updates", type=int, default=10, help="updates per timed block")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed updates per variant (compiles the compiled ones)")
    parser.add_argument("--fill", type=int, default=5_000, help="random transitions per task")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 on a shared machine whose "
                             "other cores are busy, where OpenMP threads wait on each other)")
    parser.add_argument("--end-to-end", nargs="*", default=[], choices=PRESETS,
                        help="presets whose end-to-end env steps/s (real Meta-World envs, "
                             "sequential vs pipelined collector) are measured too")
    parser.add_argument("--workers", type=int, default=1,
                        help="end to end: env worker processes of the pipelined collector")
    parser.add_argument("--e2e-iterations", type=int, default=100,
                        help="end to end: iterations per timed block")
    parser.add_argument("--e2e-rounds", type=int, default=3, help="end to end: paired rounds")
    parser.add_argument("--no-overlap", action="store_true",
                        help="skip the synthetic overlap check (overlap_speed.measure_overlap)")
    args = parser.parse_args()
    if min(args.rounds, args.updates, args.warmup, args.fill) < 1:
        parser.error("--rounds, --updates, --warmup and --fill must be positive")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be positive")
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds, "updates_per_block": args.updates, "presets": []}
    if not args.no_overlap:
        # The overlap of env stepping and updates on any machine: a toy env sleeping 5 ms per
        # step and a fake 5 ms update (benchmarks/overlap_speed.py, ideal 1.0, goal <= 1.2).
        from overlap_speed import measure_overlap

        ov = measure_overlap(5.0, 5.0, iterations=200, rounds=5)
        out["overlap"] = ov
        print(f"overlap: time per iteration / max(env, update): pipelined "
              f"{ov['pipelined_ratio']:.2f} (goal <= 1.2), sequential "
              f"{ov['sequential_ratio']:.2f}", flush=True)
    for name in args.presets:
        res = run_preset(name, device, args)
        _print(res)
        out["presets"].append(res)
        if args.json is not None:  # after every preset: a time-limited run keeps what it has
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
