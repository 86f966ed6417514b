"""Env stepping that overlaps the update: the pipelined collector against the sequential one.

Two measurements, each a ratio against a reference measured in the same process:

(a) **Overlap, synthetic** (:func:`measure_overlap`; any machine). A toy env whose vector step
    sleeps ``step_ms`` (``benchmarks/_sleep_env.py``: sleeping, so the env worker needs no core
    of its own) and a fake update of ``update_ms`` (sleeping too by default, so that the check
    measures the pipeline and not how many cores are free; ``--update spin`` spins on a core,
    as a CPU update does, and then also measures how soon a busy machine gives the worker a
    core when its step is done). One iteration is one vector step and one update, as in
    MT-SAC's data path. Every iteration and its parts are timed; references: the env time (the
    median vector step of the in-process env, which nothing overlaps) and the update time (the
    median fake update of the same block). Reported: median time per iteration ÷ max(env,
    update) for the sequential loop (``VectorCollector``; ideal (env + update) / max, ~2.0 when
    they cost the same) and for the pipelined one (``PipelinedCollector``; ideal 1.0, goal
    ≤ 1.2).
(b) **End to end, Meta-World MT10** (:func:`measure_end_to_end`). The real ``mt10-mtsac`` data
    path — the agent acting, transitions stored in the replay buffer, one update of batch 1280
    (400-400 networks) per vector step — on MT10's 10 envs, in process (``VectorCollector``)
    and in ``workers`` env worker processes (``PipelinedCollector``), after a short uniform
    warm-up. Reported: env steps/s of both and their ratio, with the env step and the update
    timed alone, so that the ideal gain (env + update) / max(env, update) can be read next to
    it. On a machine with few cores the env worker and the update's threads share them: the
    gain is bounded there (state the core count with the figures).

Both alternate sequential and pipelined blocks of iterations (the order flips every round, so
slow drift of the machine hits both alike) and report medians over rounds of paired ratios.

    python benchmarks/overlap_speed.py --json runs/bench/overlap_speed.json
    python benchmarks/overlap_speed.py --skip-metaworld          # (a) only, seconds

``measure_overlap`` and ``measure_end_to_end`` are importable (benchmarks/ on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.agents.offpolicy import UniformWarmup

SLEEP_ENV = Path(__file__).resolve().with_name("_sleep_env.py")


class _ZeroPolicy:
    """Acts with zeros (costs nothing: the update is what the learner spends its time on)."""

    def act(self, obs: np.ndarray, task_id: np.ndarray) -> np.ndarray:
        return np.zeros((obs.shape[0], 2), np.float32)


def _fake_update(ms: float, mode: str) -> Callable[[], None]:
    seconds = ms / 1e3
    if mode == "sleep":
        return lambda: time.sleep(seconds)

    def spin() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return spin


def _per_call(fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def measure_overlap(step_ms: float = 5.0, update_ms: float = 5.0, *, iterations: int = 200,
                    rounds: int = 7, num_tasks: int = 4, update: str = "sleep",
                    workers: int = 1) -> dict[str, Any]:
    """(a): time per iteration of the sequential and the pipelined loop ÷ max(env time, update
    time), each the median over one block of ``iterations`` iterations (env time: the
    sequential block's vector steps; update time: the fake updates of the same block); the
    result is the median over ``rounds`` paired rounds."""
    from mtrl.collect import VectorCollector
    from mtrl.collect.pipelined import PipelinedCollector
    from mtrl.config import EnvConfig, TrainConfig
    from mtrl.envs import make_env
    from mtrl.plugins import load_plugins

    os.environ["MTRL_BENCH_STEP_MS"] = str(step_ms)  # read by the env builder (and workers)
    load_plugins([str(SLEEP_ENV)])
    cfg = TrainConfig(seed=0, plugins=[str(SLEEP_ENV)],
                      env=EnvConfig(name="bench-sleep-reach", num_tasks=num_tasks))
    cfg.collector.name = "pipelined"
    cfg.collector.workers = workers
    policy = _ZeroPolicy()
    fake_update = _fake_update(update_ms, update)
    seq = VectorCollector(make_env(cfg.env, seed=0))
    pipe = PipelinedCollector(cfg)
    # Every iteration is timed, and its parts: medians of the same block are robust to the
    # preemptions of a shared machine, which stretch a spinning update now and then.
    times: dict[str, list[float]] = {}

    def iteration(side: str, col: Any) -> None:
        t0 = time.perf_counter()
        col.collect(policy, 1)
        t1 = time.perf_counter()
        fake_update()
        t2 = time.perf_counter()
        times[f"{side}_collect"].append(t1 - t0)
        times[f"{side}_update"].append(t2 - t1)
        times[f"{side}_iteration"].append(t2 - t0)

    sides = {"sequential": seq, "pipelined": pipe}
    try:
        seq.reset(seed=0)
        pipe.reset(seed=0)
        rows = []
        for r in range(rounds + 1):  # round 0 warms both loops up
            times.clear()
            for side in sides if r % 2 == 0 else reversed(list(sides)):
                for part in ("collect", "update", "iteration"):
                    times[f"{side}_{part}"] = []
                pipe.metrics()
                for _ in range(iterations):
                    iteration(side, sides[side])
                if side == "pipelined":
                    wait_ms = pipe.metrics()["perf/env_wait_ms"]
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            # The env time: a vector step of the in-process env with nothing to overlap it.
            env_ms = med["sequential_collect"]
            row = {"env_ms": env_ms, "update_ms": med["sequential_update"],
                   "sequential_ms": med["sequential_iteration"],
                   "pipelined_update_ms": med["pipelined_update"],
                   "pipelined_ms": med["pipelined_iteration"],
                   "pipelined_env_wait_ms": wait_ms}
            row["sequential_ratio"] = row["sequential_ms"] / max(env_ms, row["update_ms"])
            row["pipelined_ratio"] = row["pipelined_ms"] / max(env_ms,
                                                               row["pipelined_update_ms"])
            if r > 0:
                rows.append(row)
    finally:
        pipe.close()
        seq.close()

    def median(key: str) -> float:
        return float(statistics.median(row[key] for row in rows))

    return {
        "pipelined_ratio": median("pipelined_ratio"),
        "sequential_ratio": median("sequential_ratio"),
        "goal_pipelined_ratio": 1.2,
        "env_ms": median("env_ms"),
        "update_ms": median("update_ms"),
        "sequential_iteration_ms": median("sequential_ms"),
        "pipelined_iteration_ms": median("pipelined_ms"),
        "pipelined_env_wait_ms": median("pipelined_env_wait_ms"),
        "step_ms": step_ms,
        "update_mode": update,
        "iterations": iterations,
        "rounds": rounds,
        "num_envs": num_tasks,
        "workers": workers,
        "per_round": rows,
    }


def measure_end_to_end(*, iterations: int = 100, rounds: int = 3, workers: int = 1,
                       warmup_vec_steps: int = 200, device: str = "cpu",
                       preset: str = "mt10-mtsac", threads: int | None = None,
                       pipelined_threads: int | None = None) -> dict[str, Any]:
    """(b): env steps/s of the real MT-SAC data path (act, store, one update per vector step)
    with the sequential and the pipelined collector, ``rounds`` paired blocks of
    ``iterations`` iterations each after ``warmup_vec_steps`` uniform warm-up steps.
    ``threads``: torch threads of the learner (None: the process's), ``pipelined_threads``:
    those while the pipelined side runs (None: ``threads``; on a machine with few cores,
    leaving a core to the env workers)."""
    from mtrl.agents import build_agent, build_data_path
    from mtrl.collect import VectorCollector
    from mtrl.collect.pipelined import PipelinedCollector
    from mtrl.envs import make_env
    from mtrl.presets import get_preset
    from mtrl.rundir import resolve_device

    cfg = get_preset(preset)
    cfg.device = device
    cfg.replay.capacity = 100_000  # sampling cost does not depend on the capacity
    cfg.collector.name = "pipelined"
    cfg.collector.workers = workers
    dev = resolve_device(cfg.device)
    original_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    seq = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    pipe = PipelinedCollector(cfg)
    build_s = time.perf_counter() - t0
    try:
        num_envs = seq.num_envs
        cfg.warmup_steps = warmup_vec_steps * num_envs
        sides = {}
        for name, col in (("sequential", seq), ("pipelined", pipe)):
            torch.manual_seed(cfg.seed)
            agent = build_agent(cfg.agent, obs_space=col.spec.obs_space,
                                action_space=col.spec.action_space,
                                num_tasks=col.spec.num_tasks, device=dev)
            path = build_data_path(agent, cfg, col.spec, dev)
            col.reset(seed=cfg.seed)
            sides[name] = {"col": col, "agent": agent, "path": path, "vec_step": 0}

        own = threads or original_threads
        threads_of = {"sequential": own, "pipelined": pipelined_threads or own}
        torch.set_num_threads(own)

        def run(name: str, n: int) -> float:
            side = sides[name]
            torch.set_num_threads(threads_of[name])
            t = time.perf_counter()
            for _ in range(n):
                side["path"].iterate(side["col"], side["vec_step"])
                side["vec_step"] += 1
            elapsed = time.perf_counter() - t
            torch.set_num_threads(threads_of["sequential"])
            return elapsed

        for name in sides:  # the uniform warm-up, then a few updates
            run(name, warmup_vec_steps + 5)
        # References: a vector step of the in-process envs alone, an update alone.
        s = sides["sequential"]
        behaviour = UniformWarmup(s["agent"], np.random.default_rng(0), seq.spec.action_dim)
        behaviour.warm = False
        env_s = _per_call(lambda: seq.collect(behaviour, 1), 30)
        per_task = s["path"].per_task
        update_s = _per_call(lambda: s["agent"].update(s["path"].buffer.sample(per_task)), 10)
        rows = []
        for r in range(rounds):
            order = ["sequential", "pipelined"] if r % 2 == 0 else ["pipelined", "sequential"]
            timed = {name: run(name, iterations) for name in order}
            rows.append({"sequential_sps": iterations * num_envs / timed["sequential"],
                         "pipelined_sps": iterations * num_envs / timed["pipelined"],
                         "speedup": timed["sequential"] / timed["pipelined"]})
    finally:
        torch.set_num_threads(original_threads)
        pipe.close()
        seq.close()

    def med(key: str) -> float:
        return float(statistics.median(row[key] for row in rows))

    return {
        "preset": preset,
        "speedup": med("speedup"),
        "sequential_env_steps_per_s": med("sequential_sps"),
        "pipelined_env_steps_per_s": med("pipelined_sps"),
        "env_step_ms": 1e3 * env_s,
        "update_ms": 1e3 * update_s,
        "ideal_speedup": (env_s + update_s) / max(env_s, update_s),
        "num_envs": num_envs,
        "workers": workers,
        "iterations": iterations,
        "rounds": rounds,
        "warmup_vec_steps": warmup_vec_steps,
        "build_s": build_s,
        "device": str(dev),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads_of["sequential"],
        "pipelined_torch_threads": threads_of["pipelined"],
        "load_average_after": os.getloadavg()[0],
        "per_round": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--step-ms", type=float, default=5.0, help="(a) env step cost")
    parser.add_argument("--update-ms", type=float, default=5.0, help="(a) fake update cost")
    parser.add_argument("--update", choices=["sleep", "spin"], default="sleep",
                        help="(a) how the fake update spends its time: sleeping (the pipeline "
                        "alone) or spinning on a core (as a CPU update; on a busy machine the "
                        "worker then waits for a core too)")
    parser.add_argument("--iterations", type=int, default=200, help="(a) iterations per block")
    parser.add_argument("--rounds", type=int, default=7, help="(a) paired rounds")
    parser.add_argument("--skip-metaworld", action="store_true", help="only (a)")
    parser.add_argument("--mt-iterations", type=int, default=100,
                        help="(b) iterations per block (one vector step + one update each)")
    parser.add_argument("--mt-rounds", type=int, default=3, help="(b) paired rounds")
    parser.add_argument("--workers", type=int, default=1, help="(b) env worker processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="(b) torch threads of the learner (default: torch's)")
    parser.add_argument("--pipelined-threads", type=int, default=None,
                        help="(b) torch threads of the learner on the pipelined side "
                        "(default: as the sequential side)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    if min(args.iterations, args.rounds, args.mt_iterations, args.mt_rounds, args.workers) < 1:
        parser.error("--iterations, --rounds, --mt-iterations, --mt-rounds and --workers must "
                     "be positive")

    # A shared machine's load changes the figures: it is recorded with them.
    result: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                              "load_average_before": os.getloadavg()[0]}
    ov = measure_overlap(args.step_ms, args.update_ms, iterations=args.iterations,
                         rounds=args.rounds, update=args.update)
    result["overlap"] = ov
    print(f"(a) overlap: env {ov['env_ms']:.2f} ms, update {ov['update_ms']:.2f} ms per "
          f"iteration; time per iteration / max(env, update): pipelined "
          f"{ov['pipelined_ratio']:.2f} (goal <= 1.2), sequential {ov['sequential_ratio']:.2f}",
          flush=True)
    if not args.skip_metaworld:
        e2e = measure_end_to_end(iterations=args.mt_iterations, rounds=args.mt_rounds,
                                 workers=args.workers, device=args.device,
                                 threads=args.threads,
                                 pipelined_threads=args.pipelined_threads)
        result["end_to_end"] = e2e
        print(f"(b) MT10 mt10-mtsac end to end on {e2e['cpu_count']} CPU core(s), "
              f"{e2e['torch_threads']} torch thread(s) (pipelined: "
              f"{e2e['pipelined_torch_threads']}), {e2e['workers']} env worker(s): "
              f"sequential {e2e['sequential_env_steps_per_s']:.0f} env steps/s, pipelined "
              f"{e2e['pipelined_env_steps_per_s']:.0f} (x{e2e['speedup']:.2f}; env step "
              f"{e2e['env_step_ms']:.1f} ms, update {e2e['update_ms']:.1f} ms: ideal "
              f"x{e2e['ideal_speedup']:.2f})")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
