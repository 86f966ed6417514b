"""Distillation teachers: frozen single-task policies read from outside the library.

Teachers come from stable-baselines3 zips (PPO, A2C, DQN, SAC; :class:`SB3Teacher`) or from
mtrl run directories (MT-SAC, MT-A2C and their Distral variants; :class:`MtrlTeacher`);
:func:`load_teacher` picks one from a path. Each checks that its observation and action spaces
fit the env's before it is used, and answers in tensors
(:class:`~mtrl.agents.distill.TeacherOutput`), so that the distillation agent never sees files,
envs or SB3 objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from mtrl.agents.distill import Teacher, TeacherOutput
from mtrl.errors import ConfigError

# Logit of actions a teacher does not have (minimal Atari action sets): probability 0 after any
# temperature, finite so that 0 · log 0 terms stay 0 in the KL.
MASKED_LOGIT = -1e9


def _freeze(module: nn.Module) -> None:
    module.eval()
    module.requires_grad_(False)


def _space_str(space: gym.Space[Any]) -> str:
    return repr(space)


def _image_perm(teacher_shape: tuple[int, ...], env_shape: tuple[int, ...]
                ) -> tuple[int, ...] | None:
    """The permutation of a batch ``[B, *env_shape]`` into ``[B, *teacher_shape]`` when one is
    the channel-last version of the other, else None (same layout, or not an image)."""
    if len(env_shape) != 3 or teacher_shape == env_shape:
        return None
    c, h, w = env_shape
    if teacher_shape == (h, w, c):  # env [C, H, W] -> teacher [H, W, C]
        return (0, 2, 3, 1)
    hh, ww, cc = env_shape
    if teacher_shape == (cc, hh, ww):  # env [H, W, C] -> teacher [C, H, W]
        return (0, 3, 1, 2)
    return None


def _check_spaces(source: str, teacher_obs: gym.Space[Any], teacher_act: gym.Space[Any],
                  env_obs: gym.Space[Any], env_act: gym.Space[Any],
                  action_map: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """Raise ValueError if a teacher's spaces do not fit the env's; return the observation
    permutation (channel-last/first images) or None. A discrete teacher with fewer actions
    fits if ``action_map`` (its actions' indices in the env's space) has one entry per action."""
    perm = None

    def mismatch(what: str, t: gym.Space[Any], e: gym.Space[Any]) -> ValueError:
        return ValueError(f"teacher {source}: its {what} space {_space_str(t)} does not match "
                          f"the env's {what} space {_space_str(e)}")

    if type(teacher_obs) is not type(env_obs):
        raise mismatch("observation", teacher_obs, env_obs)
    if isinstance(env_obs, gym.spaces.Box):
        assert isinstance(teacher_obs, gym.spaces.Box)
        t_shape, e_shape = tuple(teacher_obs.shape), tuple(env_obs.shape)
        perm = _image_perm(t_shape, e_shape)
        if t_shape != e_shape and perm is None:
            raise mismatch("observation", teacher_obs, env_obs)
        low, high = env_obs.low, env_obs.high
        if perm is not None:
            axes = tuple(p - 1 for p in perm[1:])
            low, high = np.transpose(low, axes), np.transpose(high, axes)
        if not (np.allclose(teacher_obs.low, low) and np.allclose(teacher_obs.high, high)):
            raise mismatch("observation", teacher_obs, env_obs)
    elif teacher_obs != env_obs:
        raise mismatch("observation", teacher_obs, env_obs)
    if type(teacher_act) is not type(env_act):
        raise mismatch("action", teacher_act, env_act)
    if isinstance(env_act, gym.spaces.Box):
        assert isinstance(teacher_act, gym.spaces.Box)
        if (teacher_act.shape != env_act.shape or not np.allclose(teacher_act.low, env_act.low)
                or not np.allclose(teacher_act.high, env_act.high)):
            raise mismatch("action", teacher_act, env_act)
    elif isinstance(env_act, gym.spaces.Discrete):
        assert isinstance(teacher_act, gym.spaces.Discrete)
        mapped = action_map is not None and int(teacher_act.n) == len(action_map)
        if (int(teacher_act.n) != int(env_act.n) and not mapped) \
                or int(teacher_act.start) != int(env_act.start):
            raise mismatch("action", teacher_act, env_act)
    else:
        raise ValueError(f"teacher {source}: action space {_space_str(env_act)} is not "
                         f"supported (Discrete or Box only)")
    return perm


class SB3Teacher(Teacher):
    """A stable-baselines3 model saved with ``model.save``: PPO, A2C (categorical or diagonal
    Gaussian policies), DQN (``kind="q"``: the logits are Q-values) or SAC (tanh-squashed
    Gaussian). The policy is rebuilt by :func:`mtrl.sb3.load_sb3_policy` from the zip's plain
    JSON fields and its weights (``torch.load(weights_only=True)``); nothing in the zip is
    unpickled, and a zip that needs a pickled field is refused with a
    :class:`~mtrl.errors.ConfigError` naming the file and the field.

    ``output`` runs SB3's own preprocessing (``preprocess_obs``: image scaling, one-hot of
    discrete observations) and networks; the features are the policy's last hidden layer
    (``latent_pi``; the Q-network's penultimate layer for DQN). ``act`` calls the policy's
    ``predict``, so ``act(obs, deterministic=True)`` equals ``model.predict(obs,
    deterministic=True)[0]``. Non-deterministic ``act`` samples from the policy (greedy for
    DQN: the ε of ε-greedy is a training schedule, not part of the policy). Images are
    transposed between channel-first and channel-last layouts when the teacher's differs from
    the env's."""

    def __init__(self, path: str | Path, *, obs_space: gym.Space[Any],
                 action_space: gym.Space[Any], device: torch.device | str = "cpu",
                 action_map: Sequence[int] | None = None) -> None:
        from mtrl.sb3 import load_sb3_policy

        self.path = Path(path)
        self.device = torch.device(device)
        loaded = load_sb3_policy(self.path, device=self.device)
        self.algo = loaded.algo
        self.source = f"{self.path} ({self.algo.upper()})"
        self.policy = loaded.policy
        self._perm = _check_spaces(self.source, loaded.observation_space,
                                   loaded.action_space, obs_space, action_space, action_map)
        # A teacher of a game's minimal action set (e.g. ALE/Pong-v5: 6 actions) in an env with
        # the full 18: its logits / Q-values go to their full-space columns, the other columns
        # get MASKED_LOGIT (probability 0), and its actions are translated.
        self.action_map: Tensor | None = None
        n_teacher = getattr(loaded.action_space, "n", None)
        if action_map is not None and n_teacher is not None \
                and int(n_teacher) != int(getattr(action_space, "n", n_teacher)):
            self.action_map = torch.as_tensor(list(action_map), dtype=torch.long,
                                              device=self.device)
            self.source += f" (actions mapped to {list(action_map)})"
        self.obs_space, self.action_space = obs_space, action_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.kind = "q" if self.algo == "dqn" else "policy"
        self.squashed = self.algo == "sac"
        if self.algo in ("ppo", "a2c"):
            from stable_baselines3.common.distributions import (
                CategoricalDistribution,
                DiagGaussianDistribution,
            )

            dist = self.policy.action_dist
            if not isinstance(dist, CategoricalDistribution | DiagGaussianDistribution):
                raise ValueError(f"teacher {self.source}: action distribution "
                                 f"{type(dist).__name__} is not supported")
            if self.policy.squash_output:
                raise ValueError(f"teacher {self.source}: squashed PPO/A2C policies are not "
                                 "supported")
        _freeze(self.policy)
        self.policy.set_training_mode(False)
        probe = torch.as_tensor(np.stack([obs_space.sample()]), device=self.device)
        features = self.output(probe).features
        self.feature_dim = None if features is None else int(features.shape[-1])

    def _to_teacher_layout(self, obs: Tensor) -> Tensor:
        return obs if self._perm is None else obs.permute(*self._perm)

    @torch.no_grad()
    def output(self, obs: Tensor) -> TeacherOutput:
        from stable_baselines3.common.policies import BaseModel

        x = self._to_teacher_layout(obs)
        policy = self.policy
        if self.algo in ("ppo", "a2c"):
            feats = BaseModel.extract_features(policy, x, policy.pi_features_extractor)
            latent = policy.mlp_extractor.forward_actor(feats)
            out = policy.action_net(latent)
            if self.discrete:
                return TeacherOutput(logits=self._full_space(out), features=latent)
            return TeacherOutput(mean=out, log_std=policy.log_std.expand_as(out),
                                 features=latent)
        if self.algo == "sac":
            from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN

            actor = policy.actor
            feats = actor.extract_features(x, actor.features_extractor)
            latent = actor.latent_pi(feats)
            log_std = torch.clamp(actor.log_std(latent), LOG_STD_MIN, LOG_STD_MAX)
            return TeacherOutput(mean=actor.mu(latent), log_std=log_std, features=latent)
        # dqn
        qnet = policy.q_net
        feats = qnet.extract_features(x, qnet.features_extractor)
        layers = qnet.q_net
        if isinstance(layers, nn.Sequential) and isinstance(layers[-1], nn.Linear):
            hidden = layers[:-1](feats)
            return TeacherOutput(logits=self._full_space(layers[-1](hidden)), features=hidden)
        return TeacherOutput(logits=self._full_space(layers(feats)))

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        obs = np.asarray(obs)
        if self._perm is not None:
            obs = np.transpose(obs, self._perm)
        action, _ = self.policy.predict(obs, deterministic=deterministic)
        if self.action_map is not None:
            return self.action_map.cpu().numpy()[np.asarray(action)]
        return np.asarray(action)

    def _full_space(self, logits: Tensor) -> Tensor:
        if self.action_map is None:
            return logits
        n = int(getattr(self.action_space, "n", 0))
        full = logits.new_full((logits.shape[0], n), MASKED_LOGIT)
        return full.index_copy(1, self.action_map, logits)


class MtrlTeacher(Teacher):
    """The policy for task ``task`` of an mtrl run directory (MT-SAC or MT-A2C, Distral
    included; the run may hold any set of tasks that contains ``task``), with the weights of
    ``checkpoint`` (default: the latest), loaded through :class:`mtrl.rundir.RunDir`. The
    agent says what its policy outputs (:meth:`policy_output`): MT-SAC a tanh-squashed Gaussian
    (``squashed=True``) without features; MT-A2C categorical logits, or a Gaussian mean with the
    task's state-independent log-std, with the CNN torso's output as features when it has
    one."""

    def __init__(self, run_dir: str | Path, task: str, *, obs_space: gym.Space[Any],
                 action_space: gym.Space[Any], device: torch.device | str = "cpu",
                 checkpoint: str | Path | None = None) -> None:
        from mtrl.checkpoint import CheckpointError
        from mtrl.config import task_names
        from mtrl.rundir import ResumeError, RunDir

        run = RunDir(run_dir)
        self.run_dir = run.path
        self.device = torch.device(device)
        try:
            cfg = run.config()
        except ResumeError as e:
            raise ValueError(f"teacher run {self.run_dir}: {e}") from e
        names = list(task_names(cfg.env))
        if task not in names:
            raise ValueError(f"teacher run {self.run_dir} was not trained on task {task!r}; "
                             f"its tasks: {', '.join(names)}")
        self.task, self.task_index = task, names.index(task)
        try:
            ckpt_path = run.checkpoint_path(checkpoint)
        except ResumeError:
            raise ValueError(f"teacher run {self.run_dir} has no checkpoint") from None
        self.checkpoint = ckpt_path
        self.source = f"{self.run_dir} task {task} ({cfg.agent.name}, {ckpt_path.name})"
        try:
            agent, _ = run.load_agent(obs_space=obs_space, action_space=action_space,
                                      task_names=names, device=self.device,
                                      checkpoint=ckpt_path)
        except ResumeError as e:
            raise ValueError(f"teacher checkpoint {ckpt_path} was trained on other tasks than "
                             f"{self.run_dir}/config.yaml") from e
        except (CheckpointError, RuntimeError, ValueError, KeyError) as e:
            raise ValueError(
                f"teacher {self.source} does not fit the env: observation space "
                f"{_space_str(obs_space)}, action space {_space_str(action_space)}: "
                f"{' '.join(str(e).split())[:300]}"
            ) from e
        if not hasattr(agent, "policy_output"):
            raise ValueError(f"teacher {self.source}: a {cfg.agent.name} run cannot be a teacher "
                             "(allowed: mtsac, mta2c, distral-sac, distral-a2c runs)")
        for module in agent.policy_modules():
            _freeze(module)
        self.agent = agent
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.squashed = bool(agent.policy_squashed)
        self.feature_dim = agent.policy_feature_dim
        self.kind = "policy"
        self._tid_cache: dict[int, Tensor] = {}

    def _tid(self, n: int) -> Tensor:
        t = self._tid_cache.get(n)
        if t is None:
            t = torch.full((n,), self.task_index, dtype=torch.int64, device=self.device)
            self._tid_cache = {n: t}
        return t

    @torch.no_grad()
    def output(self, obs: Tensor) -> TeacherOutput:
        return self.agent.policy_output(obs, self._tid(obs.shape[0]))

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        obs = np.asarray(obs)
        tid = np.full(obs.shape[0], self.task_index, dtype=np.int64)
        return self.agent.act(obs, tid, deterministic=deterministic)


def load_teacher(spec: str | Path, task: str, *, obs_space: gym.Space[Any],
                 action_space: gym.Space[Any], device: torch.device | str = "cpu",
                 action_map: Sequence[int] | None = None) -> Teacher:
    """The teacher ``spec`` names for ``task``: a stable-baselines3 ``.zip``
    (:class:`SB3Teacher`) or an mtrl run directory with a ``config.yaml``
    (:class:`MtrlTeacher`). ``action_map``: for SB3 teachers of a smaller discrete action set
    (an Atari game's minimal set), the env action of each teacher action."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".zip":
        return SB3Teacher(path, obs_space=obs_space, action_space=action_space, device=device,
                          action_map=action_map)
    if path.is_dir() and (path / "config.yaml").is_file():
        return MtrlTeacher(path, task, obs_space=obs_space, action_space=action_space,
                           device=device)
    what = "does not exist" if not path.exists() else "is neither"
    raise ValueError(
        f"teacher {spec!r} for task {task!r} {what}: a teacher is a stable-baselines3 model "
        "file (.zip, PPO/A2C/DQN/SAC) or an mtrl run directory (with config.yaml)"
    )


def parse_teacher_specs(entries: list[str], tasks: list[str]) -> dict[str, str]:
    """``agent.distill.teachers`` → ``{task: path}`` for every task (see that field). A bare
    path stands for each task not named; for a directory of teachers it becomes
    ``DIR/<task>.zip`` or ``DIR/<task>`` where that exists. Raises ConfigError."""
    named: dict[str, str] = {}
    default: str | None = None
    for e in entries:
        if "=" in e:
            task, path = (x.strip() for x in e.split("=", 1))
            if task not in tasks:
                raise ConfigError(f"agent.distill.teachers: {task!r} is not a task of this env; "
                                  f"tasks: {', '.join(tasks)}")
            if task in named:
                raise ConfigError(f"agent.distill.teachers names task {task!r} twice")
            named[task] = path
        else:
            if default is not None:
                raise ConfigError("agent.distill.teachers has more than one bare path; give "
                                  "the others as task=path")
            default = e.strip()
    missing = [t for t in tasks if t not in named]
    if missing and default is None:
        raise ConfigError(
            f"agent.distill.teachers has no teacher for task(s) {', '.join(missing)}: give one "
            "per task as task=path (a stable-baselines3 .zip or an mtrl run directory), or a "
            "directory with <task>.zip files / an mtrl run directory trained on these tasks"
        )
    out = dict(named)
    if default is not None:
        from pathlib import Path

        root = Path(default)
        run = (root / "config.yaml").exists()  # one mtrl run for all these tasks
        for t in missing:
            hit = next((c for c in (root / f"{t}.zip", root / t) if c.exists()), None)
            out[t] = default if run else str(hit or root / f"{t}.zip")
    return {t: out[t] for t in tasks}
