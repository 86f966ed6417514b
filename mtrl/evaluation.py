"""The evaluation protocol.

* the deterministic policy (the mean action, squashed);
* ``N`` episodes per task; on Meta-World ``N = 50``, one per goal: episode ``j`` of a task uses
  goal ``j mod 50`` of the goals generated from the run's seed;
* an episode succeeds if the success flag is 1 at *any* of its steps (episodes end at the first
  success, as in ``metaworld.evaluation``; Meta-World episodes are otherwise 500 steps);
* reported: per-task success rate and mean return, and their means over tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtrl.envs.base import MultiTaskVectorEnv

PROTOCOL = (
    "deterministic policy; {n} episodes per task (one per goal, goals cycled); an episode "
    "succeeds if success==1 at any step (episodes end at the first success); success rate and "
    "mean return per task, then the mean over tasks"
)


RETURN_PROTOCOL = (
    "{policy}; {n} episodes per game (episodes end at the game's end or at the frame cap); "
    "mean unclipped game score per game and its human-normalized score (random/human "
    "reference scores of the Atari-57 literature, mtrl.envs.atari_scores); median and mean over "
    "games"
)


def protocol_text(n: int, *, deterministic: bool = True, has_success: bool = True) -> str:
    """The protocol statement stored with every evaluation: the Meta-World success protocol,
    or, for benchmarks without a success flag (Atari), the return / human-normalized one."""
    if has_success and deterministic:
        return PROTOCOL.format(n=n)
    policy = ("deterministic policy (the mode)" if deterministic
              else "actions sampled from the policy")
    if not has_success:
        return RETURN_PROTOCOL.format(policy=policy, n=n)
    return PROTOCOL.format(n=n).replace("deterministic policy", policy, 1)


class Actor(Protocol):
    def act(self, obs: np.ndarray, task_id: np.ndarray, deterministic: bool = False) -> np.ndarray:
        ...


def extra_policies(agent: Any) -> dict[str, Actor]:
    """Policies of an agent that are evaluated besides the one it trains with (its
    ``extra_policies()``: Distral's distilled policy π0 as ``"pi0"``). The agent's own ``act``
    (Distral: the task policies πi) is always the main result."""
    extra = getattr(agent, "extra_policies", None)
    return dict(extra()) if extra is not None else {}


POLICY_TITLES = {"pi0": "distilled policy π0 (Distral)"}


@dataclass
class EvalResult:
    task_names: list[str]
    success: dict[str, float]
    returns: dict[str, float]
    episodes: dict[str, int]
    episode_success: dict[str, list[bool]] = field(default_factory=dict)
    episode_return: dict[str, list[float]] = field(default_factory=dict)
    hns: dict[str, float] = field(default_factory=dict)
    """Atari: human-normalized score of each game's mean return (empty otherwise)."""

    @property
    def success_mean(self) -> float:
        return float(np.mean([self.success[t] for t in self.task_names]))

    @property
    def hns_median(self) -> float:
        return float(np.median([self.hns[t] for t in self.task_names]))

    @property
    def hns_mean(self) -> float:
        return float(np.mean([self.hns[t] for t in self.task_names]))

    @property
    def return_mean(self) -> float:
        return float(np.mean([self.returns[t] for t in self.task_names]))

    def tasks_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            t: {"success": self.success[t], "return": self.returns[t], "episodes": self.episodes[t]}
            for t in self.task_names
        }
        for t, h in self.hns.items():
            out[t]["human_normalized_score"] = h
        return out

    def table(self) -> str:
        width = max(12, *(len(t) for t in self.task_names))
        if self.hns:  # Atari: no success flag; returns and human-normalized scores
            lines = [f"{'game':<{width}}  {'return':>10}  {'HNS':>8}  {'episodes':>8}"]
            lines.append("-" * len(lines[0]))
            for t in self.task_names:
                lines.append(f"{t:<{width}}  {self.returns[t]:>10.1f}  {self.hns[t]:>8.3f}  "
                             f"{self.episodes[t]:>8d}")
            lines.append("-" * len(lines[0]))
            lines.append(f"{'median HNS':<{width}}  {'':>10}  {self.hns_median:>8.3f}")
            lines.append(f"{'mean HNS':<{width}}  {'':>10}  {self.hns_mean:>8.3f}")
            return "\n".join(lines)
        lines = [f"{'task':<{width}}  {'success':>8}  {'return':>10}  {'episodes':>8}"]
        lines.append("-" * len(lines[0]))
        for t in self.task_names:
            lines.append(
                f"{t:<{width}}  {self.success[t]:>8.3f}  {self.returns[t]:>10.2f}  "
                f"{self.episodes[t]:>8d}"
            )
        lines.append("-" * len(lines[0]))
        lines.append(f"{'mean':<{width}}  {self.success_mean:>8.3f}  {self.return_mean:>10.2f}")
        return "\n".join(lines)


class EvaluationInterrupted(Exception):
    """:func:`evaluate` stopped early because its ``should_stop`` said so."""


def evaluate(
    agent: Actor, env: MultiTaskVectorEnv, episodes_per_task: int, *, seed: int = 0,
    deterministic: bool = True, should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run the protocol above on an evaluation env (autoreset disabled, one env per task).
    ``deterministic=False`` samples actions from the policy instead of taking its mode.
    ``should_stop`` is asked before every vector step; when it returns True the evaluation
    raises :class:`EvaluationInterrupted` (a signal must not wait for hundreds of episodes).
    ``progress(done, total)`` is called whenever episodes finish."""
    if len(np.unique(env.task_ids)) != env.num_envs:
        raise ValueError("the evaluation env must have exactly one sub-env per task")
    n = env.num_envs
    task_ids = env.task_ids
    goals = max(1, env.goals_per_task)
    succ: list[list[bool]] = [[] for _ in range(n)]
    rets: list[list[float]] = [[] for _ in range(n)]
    count = np.zeros(n, dtype=np.int64)
    all_envs = np.ones(n, dtype=bool)

    env.set_goals(count % goals, all_envs)
    obs, _ = env.reset(seed=seed)
    while (count < episodes_per_task).any():
        if should_stop is not None and should_stop():
            raise EvaluationInterrupted(f"evaluation stopped after {int(count.sum())} episodes")
        action = agent.act(obs, task_ids, deterministic=deterministic)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        if not done.any():
            continue
        ep = info["episode"]
        for j in np.flatnonzero(done):
            if count[j] < episodes_per_task:
                succ[j].append(bool(ep["success"][j]))
                rets[j].append(float(ep["return"][j]))
                count[j] += 1
        if progress is not None:
            progress(int(count.sum()), n * episodes_per_task)
        # Finished envs restart on their next goal; envs already done keep running harmlessly
        # so that the vector env can step in lockstep.
        env.set_goals(count % goals, done)
        obs, _ = env.reset(options={"reset_mask": done})

    names = [env.task_names[k] for k in task_ids]
    hns: dict[str, float] = {}
    for i in range(n):
        score = env.normalized_score(names[i], float(np.mean(rets[i])))
        if score is not None:
            hns[names[i]] = score
    return EvalResult(
        task_names=list(env.task_names),
        success={names[i]: float(np.mean(succ[i])) for i in range(n)},
        returns={names[i]: float(np.mean(rets[i])) for i in range(n)},
        episodes={names[i]: len(succ[i]) for i in range(n)},
        episode_success={names[i]: succ[i] for i in range(n)},
        episode_return={names[i]: rets[i] for i in range(n)},
        hns=hns,
    )


@dataclass
class RunEvaluation:
    result: EvalResult
    run_dir: str
    checkpoint: str | None
    step: int
    episodes_per_task: int
    protocol: str = ""
    extra: dict[str, EvalResult] = field(default_factory=dict)
    """Other policies of the agent, evaluated the same way (Distral: ``"pi0"``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_dir": self.run_dir,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "episodes_per_task": self.episodes_per_task,
            **_summary(self.result),
            "protocol": self.protocol or PROTOCOL.format(n=self.episodes_per_task),
        }
        out.update({name: _summary(res) for name, res in self.extra.items()})
        return out


def _summary(res: EvalResult) -> dict[str, Any]:
    """Means over tasks (and HNS for Atari) and the per-task table of one evaluation."""
    return {
        "success_mean": res.success_mean,
        "return_mean": res.return_mean,
        **({"hns_median": res.hns_median, "hns_mean": res.hns_mean} if res.hns else {}),
        "tasks": res.tasks_dict(),
    }


def load_policy(run_dir: str, checkpoint: str | None, device: str, env: MultiTaskVectorEnv
                ) -> tuple[Any, Path, dict[str, Any]]:
    """The agent of a run directory with the weights of ``checkpoint`` (default: the latest),
    in eval mode, for ``env``; also the checkpoint path and its loaded state."""
    from mtrl.rundir import RunDir

    agent, ckpt = RunDir(run_dir).load_agent(
        obs_space=env.single_observation_space, action_space=env.single_action_space,
        task_names=list(env.task_names), device=device, checkpoint=checkpoint)
    return agent, ckpt.path, ckpt.state


def evaluate_run(
    run_dir: str,
    *,
    checkpoint: str | None = None,
    episodes_per_task: int | None = None,
    device: str = "auto",
) -> RunEvaluation:
    """Evaluate a saved policy of a run directory (latest checkpoint unless one is given)."""
    from mtrl import config as C
    from mtrl.envs import make_env
    from mtrl.rundir import RunDir
    from mtrl.seeding import derive_seed, seed_everything

    cfg = RunDir(run_dir).config()
    C.validate(cfg, memory=False)  # evaluation builds no training buffers
    n = episodes_per_task if episodes_per_task is not None else cfg.eval.episodes_per_task
    if n <= 0:
        raise C.ConfigError(f"episodes_per_task={n} must be > 0")
    seed_everything(cfg.seed)
    env = make_env(cfg.env, seed=cfg.seed, evaluation=True)
    try:
        agent, ckpt_path, state = load_policy(run_dir, checkpoint, device, env)
        result = evaluate(agent, env, n, seed=derive_seed(cfg.seed, "eval"),
                          deterministic=cfg.eval.deterministic)
        extra = {name: evaluate(actor, env, n, seed=derive_seed(cfg.seed, "eval"),
                                deterministic=cfg.eval.deterministic)
                 for name, actor in extra_policies(agent).items()}
    finally:
        env.close()
    return RunEvaluation(
        result=result,
        run_dir=str(run_dir),
        checkpoint=str(ckpt_path),
        step=int(state["loop"]["env_steps"]),
        episodes_per_task=n,
        protocol=protocol_text(n, deterministic=cfg.eval.deterministic,
                               has_success=bool(env.benchmark.get("has_success", True))),
        extra=extra,
    )
