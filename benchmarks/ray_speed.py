"""Remote env runners on Ray against the in-process collector, on this machine.

Two measurements, each a ratio of two things timed in the same process in alternating rounds
(the order flips every round, so drift of the machine hits both alike):

* **collection** (``mt10_ray2_vs_vector``): MT10 env steps/s through ``--collector ray`` with 2
  runners ÷ the in-process :class:`~mtrl.collect.VectorCollector`, the same envs (Meta-World's
  MT10 with the run's seed: the same goals and env seeds) and the same actions (the uniform
  warm-up of the replay data path, drawn in the learner from one seeded generator, sent to the
  runners with each request). Reported per chunk size: ``collect(policy, n)`` with ``n = 1``
  is what mt10-mtsac asks for (one update per vector step), larger ``n`` what an on-policy
  unroll asks for. Ray's cost is one request/reply per chunk plus pickling the transitions;
  2 runners step their 5 envs each in parallel.
* **learning** (``atari6_impala_ray2_vs_a2c``): frames/s (env steps × frame skip 4) of whole
  training iterations (collect + update): ``atari6-impala-popart`` with its 48 envs on 2 Ray
  runners, ÷ the synchronous in-process ``atari6-a2c-popart``; the in-process IMPALA
  (``atari6_impala_vector_vs_a2c``) is shown too, so the cost of the remote hand-over and the
  cost of the learner's longer unroll are told apart. Both on the CPU here.

Ray runs as the collector starts it (``mtrl.collect.ray.LOCAL_RAY_SYSTEM_CONFIG``: runners at
the learner's niceness). The collection rows show both hand-overs: with ``collector.prefetch``
(the default: the next chunk is requested as soon as one is returned, so the driver's work on
a chunk overlaps the runners' stepping of the next) and without (request, wait, repeat). In
the learning rows the runners of the prefetching IMPALA step the next unroll during the update.

    python benchmarks/ray_speed.py --json benchmarks/results/ray_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.agents import build_agent, build_data_path
from mtrl.agents.offpolicy import UniformWarmup
from mtrl.collect import VectorCollector
from mtrl.envs import make_env
from mtrl.presets import get_preset


def alternate(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every ``fn`` (which returns a rate) once per round, in an order that rotates every
    round; the rates of each."""
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(fns[name]())
    return out


def paired(a: list[float], b: list[float]) -> float:
    """Median over rounds of the ratio ``a / b``."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def collection(chunks: list[int], steps: int, rounds: int) -> dict[str, Any]:
    import ray

    from mtrl.collect.ray import RayCollector

    cfg = get_preset("mt10-mtsac")
    cfg.collector.name = "ray"
    cfg.collector.runners = 2
    vector = VectorCollector(make_env(cfg.env, seed=cfg.seed))
    remote = RayCollector(cfg)
    try:
        vector.reset(seed=cfg.seed)
        remote.reset(seed=cfg.seed)
        n_envs = vector.num_envs
        action_dim = vector.spec.action_dim
        out: dict[str, Any] = {"envs": n_envs, "runners": 2, "chunks": {}}
        for n in chunks:
            calls = max(1, steps // n)

            def rate(col: Any, seed: int, n: int = n, calls: int = calls) -> float:
                warm = UniformWarmup(None, np.random.default_rng(seed), action_dim)
                t0 = time.perf_counter()
                for _ in range(calls):
                    col.collect(warm, n)
                return calls * n * n_envs / (time.perf_counter() - t0)

            for col in (vector, remote):  # warm up: first calls, caches
                rate(col, 0, calls=2)
            def ray_rate(prefetch: bool, n: int = n, calls: int = calls) -> float:
                remote.prefetch = prefetch
                return rate(remote, 1, n, calls)

            rates = alternate({"vector": lambda: rate(vector, 1),
                               "ray": lambda: ray_rate(True),
                               "ray_sync": lambda: ray_rate(False)}, rounds)
            out["chunks"][str(n)] = {
                "vector_steps_per_s": statistics.median(rates["vector"]),
                "ray2_steps_per_s": statistics.median(rates["ray"]),
                "ray2_sync_steps_per_s": statistics.median(rates["ray_sync"]),
                "ray2_vs_vector": paired(rates["ray"], rates["vector"]),
                "ray2_sync_vs_vector": paired(rates["ray_sync"], rates["vector"]),
            }
            c = out["chunks"][str(n)]
            print(f"MT10 collect(n={n:>3}): vector {c['vector_steps_per_s']:7.0f} env steps/s, "
                  f"2 Ray runners {c['ray2_steps_per_s']:7.0f} (prefetch), "
                  f"{c['ray2_sync_steps_per_s']:7.0f} (sync); ray/vector "
                  f"{c['ray2_vs_vector']:.2f} (prefetch), {c['ray2_sync_vs_vector']:.2f} (sync)",
                  flush=True)
        return out
    finally:
        remote.close()
        vector.close()
        if ray.is_initialized():
            ray.shutdown()


def learning(iterations: int, rounds: int) -> dict[str, Any]:
    """Frames/s of whole training iterations of the three setups."""
    import ray

    from mtrl.collect.ray import RayCollector

    setups: dict[str, Any] = {}
    frame_skip = 4

    def build(preset: str, ray_runners: int = 0) -> Any:
        cfg = get_preset(preset)
        cfg.device = "cpu"
        if ray_runners:
            cfg.collector.name = "ray"
            cfg.collector.runners = ray_runners
            col: Any = RayCollector(cfg)
        else:
            col = VectorCollector(make_env(cfg.env, seed=cfg.seed))
        col.reset(seed=cfg.seed)
        agent = build_agent(cfg.agent, obs_space=col.spec.obs_space,
                            action_space=col.spec.action_space, num_tasks=col.spec.num_tasks,
                            device=torch.device("cpu"))
        path = build_data_path(agent, cfg, col.spec, torch.device("cpu"))
        return col, path

    try:
        setups["a2c_vector"] = build("atari6-a2c-popart")
        setups["impala_vector"] = build("atari6-impala-popart")
        setups["impala_ray2"] = build("atari6-impala-popart", ray_runners=2)

        def rate(name: str, its: int = iterations) -> float:
            col, path = setups[name]
            frames = 0
            t0 = time.perf_counter()
            for _ in range(its):
                tr = path.iterate(col, 0)
                frames += tr.transitions.reward.size * frame_skip
            return frames / (time.perf_counter() - t0)

        for name in setups:
            rate(name, 1)
        rates = alternate({name: (lambda name=name: rate(name)) for name in setups}, rounds)
        out: dict[str, Any] = {
            name: {"frames_per_s": statistics.median(r),
                   "unroll": int(setups[name][1].storage.num_steps),
                   "envs": int(setups[name][0].num_envs)}
            for name, r in rates.items()
        }
        out["impala_ray2_vs_a2c"] = paired(rates["impala_ray2"], rates["a2c_vector"])
        out["impala_vector_vs_a2c"] = paired(rates["impala_vector"], rates["a2c_vector"])
        out["impala_ray2_vs_impala_vector"] = paired(rates["impala_ray2"], rates["impala_vector"])
        for name in setups:
            print(f"atari6 {name:>13}: {out[name]['frames_per_s']:7.0f} frames/s "
                  f"({out[name]['envs']} envs x {out[name]['unroll']}-step unrolls)", flush=True)
        return out
    finally:
        for col, _ in setups.values():
            col.close()
        if ray.is_initialized():
            ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 10, 50],
                   help="vector steps per collect call")
    p.add_argument("--steps", type=int, default=200, help="vector steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=3,
                   help="training iterations per timed round (atari6)")
    p.add_argument("--skip", nargs="*", default=[], choices=["collection", "learning"])
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "platform": platform.platform(),
                                          "torch": torch.__version__}}
    if "collection" not in args.skip:
        result["collection"] = collection(args.chunks, args.steps, args.rounds)
        c = result["collection"]["chunks"]
        result["mt10_ray2_vs_vector"] = {n: v["ray2_vs_vector"] for n, v in c.items()}
    if "learning" not in args.skip:
        result["learning"] = learning(args.iterations, args.rounds)
        result["atari6_impala_ray2_vs_a2c"] = result["learning"]["impala_ray2_vs_a2c"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
