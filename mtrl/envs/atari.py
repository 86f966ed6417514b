"""Sets of Atari 2600 games as one multi-task vector env, on ale_py's native vector env.

Every game runs in its own ``ale_py.vector_env.AtariVectorEnv`` (C++ emulators with their own
worker threads); :class:`MultiGameAtariVectorEnv` steps all of them concurrently — actions are
sent to every game first, then the results are received from each — and concatenates them, so
sub-env ``i`` plays game ``i // envs_per_game``. Game names (task names) are ALE's games in
CamelCase (``Pong``, ``SpaceInvaders``); ale_py's ROM ids are snake_case (``space_invaders``):
:func:`rom_id` and :func:`game_name` convert.

Settings (the ALE v5 protocol of Machado et al. 2018, *Revisiting the Arcade Learning
Environment*, with the DQN preprocessing of Mnih et al. 2015), fixed for every game and recorded
in ``env.benchmark``:

* the full 18-action space for every game, so that one policy head serves all games;
* sticky actions: with probability 0.25 the emulator repeats the previous action (per frame);
* frame skip 4, the observation being the pixel-wise max of the last two frames;
* 84×84 grayscale frames, the last 4 stacked: ``uint8 [num_envs, 4, 84, 84]``;
* up to 30 no-op actions at the start of each episode;
* no end of episode at a life loss, and no FIRE at reset (v5 envs do neither; sticky actions
  and no-ops already randomize starts, and fire-reset is a per-game hack);
* episodes truncate (``truncated``, never ``terminated``) after ``max_episode_frames`` emulator
  frames (108,000 = 30 minutes of play = 27,000 agent steps), counted from the end of the
  no-op start, as ale_py counts them;
* no reward clipping inside ALE: with ``clip_rewards=True`` the rewards that ``step`` returns
  are their sign (−1, 0, +1; Mnih et al. 2015), while ``info["raw_reward"]`` and
  ``info["episode"]["return"]`` are always the game's own score.

Atari has no success signal: ``info["success"]`` is always False, there is one "goal" per game
and evaluation ends episodes only at game over or the time limit.

Evaluation envs (``evaluation=True``) behave as with autoreset disabled: a finished env reports
its last frame and must be reset (``reset(options={"reset_mask": done})``) before the next step.
ale_py has no disabled mode, so its same-step reset is kept and the new episode's first frame
is handed out at that reset.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import gymnasium as gym
import numpy as np

from mtrl.envs.atari_scores import REFERENCE_SCORES, human_normalized_score
from mtrl.envs.base import MultiTaskVectorEnv
from mtrl.registry import register_env

NUM_ACTIONS = 18
FRAME_SIZE = 84

ATARI6 = ["Pong", "Breakout", "SpaceInvaders", "Seaquest", "BeamRider", "Qbert"]
"""Six classic games (Mnih et al. 2013/2015); Pong and Breakout show learning quickly."""

ATARI57 = list(REFERENCE_SCORES)
"""The 57 games of the Atari-57 benchmark (those with human and random reference scores)."""


def game_name(rom: str) -> str:
    """ale_py ROM id → mtrl game name: ``space_invaders`` → ``SpaceInvaders``."""
    return "".join(part.capitalize() for part in rom.split("_"))


@functools.cache
def _roms_by_game() -> dict[str, str]:
    from ale_py.roms import get_all_rom_ids

    return {game_name(r): r for r in get_all_rom_ids()}


@functools.cache
def minimal_action_set(game: str) -> tuple[int, ...]:
    """The game's minimal action set as indices of the full 18-action space (ALE's action
    enum), in the order single-game envs with ``full_action_space=False`` use: action ``k`` of
    such an env (e.g. a stable-baselines3 model trained on ``ALE/Pong-v5``) is full action
    ``minimal_action_set(game)[k]`` here."""
    from ale_py import ALEInterface, LoggerMode
    from ale_py.roms import get_rom_path

    ALEInterface.setLoggerMode(LoggerMode.Error)
    path = get_rom_path(rom_id(game))
    if path is None:
        raise ValueError(f"ale_py has no ROM for {game!r}")
    ale = ALEInterface()
    ale.loadROM(path)
    return tuple(int(a.value) for a in ale.getMinimalActionSet())


#: ALE's action enum: each FIRE action → the same move without FIRE (FIRE → NOOP, UPFIRE → UP, …).
_WITHOUT_FIRE = (0, 0, 2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9)


@functools.cache
def full_action_map(game: str) -> np.ndarray | None:
    """How the shared 18 actions reach a game whose *full* action space is smaller: ``map[a]``
    is the index in that game's legal action set of ALE action ``a``, or of ``a`` without FIRE
    when the game has no such action. None when the game takes all 18 (every game but Skiing in
    ale-py 0.12, whose legal set has no FIRE actions: its button does nothing in the race)."""
    from ale_py import ALEInterface, LoggerMode
    from ale_py.roms import get_rom_path

    ALEInterface.setLoggerMode(LoggerMode.Error)
    path = get_rom_path(rom_id(game))
    if path is None:
        raise ValueError(f"ale_py has no ROM for {game!r}")
    ale = ALEInterface()
    ale.loadROM(path)
    legal = [int(x.value) for x in ale.getLegalActionSet()]
    if len(legal) == NUM_ACTIONS:
        return None
    index = {action: k for k, action in enumerate(legal)}
    out = []
    for action in range(NUM_ACTIONS):
        target = action if action in index else _WITHOUT_FIRE[action]
        if target not in index:
            raise RuntimeError(f"{game}: ALE action {action} has no counterpart in the game's "
                               f"legal actions {legal}")
        out.append(index[target])
    return np.asarray(out, dtype=np.int64)


def available_games() -> list[str]:
    """Every game whose ROM ships with the installed ale_py, as mtrl game names."""
    return sorted(_roms_by_game())


def rom_id(game: str) -> str:
    """mtrl game name → ale_py ROM id: ``SpaceInvaders`` → ``space_invaders``."""
    try:
        return _roms_by_game()[game]
    except KeyError:
        raise ValueError(
            f"unknown Atari game {game!r}; valid names: {', '.join(available_games())}"
        ) from None


def threads_per_game(num_threads: int, num_games: int, envs_per_game: int) -> int:
    """Worker threads of each game's vector env. ``num_threads`` is the total budget (0: one per
    available CPU core), shared equally by the games; every game gets at least one thread so
    that all games emulate concurrently, and no more threads than it has envs."""
    if num_threads > 0:
        budget = num_threads
    elif hasattr(os, "sched_getaffinity"):  # the cores this process may use (Linux)
        budget = len(os.sched_getaffinity(0))
    else:
        budget = os.cpu_count() or 1
    return max(1, min(envs_per_game, budget // num_games))


class MultiGameAtariVectorEnv(gym.vector.VectorEnv):
    """Several ``AtariVectorEnv`` (one per game, ``envs_per_game`` envs each, or one count per
    game) as one vector env, the envs game by game.

    ``autoreset=True``: same-step autoreset (the obs of a finished env is its next episode's
    first frame; the last frame is in ``info["final_obs"]``). ``autoreset=False``: finished envs
    wait for a masked ``reset`` (see the module docstring). ``info["raw_reward"]`` holds the
    unclipped rewards and ``info["lives"]`` the lives left.
    """

    def __init__(
        self,
        games: list[str],
        envs_per_game: int | list[int],
        *,
        seed: int | None,
        autoreset: bool = True,
        clip_rewards: bool = False,
        repeat_action_probability: float = 0.25,
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = 4,
        max_episode_frames: int = 108_000,
        num_threads: int = 0,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        if not games:
            raise ValueError("need at least one game")
        if len(set(games)) != len(games):
            raise ValueError(f"games={games} lists a game twice")
        counts = ([int(envs_per_game)] * len(games) if isinstance(envs_per_game, int)
                  else [int(c) for c in envs_per_game])
        if len(counts) != len(games) or min(counts) < 1:
            raise ValueError(f"envs_per_game={envs_per_game} must be >= 1 (one count per game)")
        self.games = list(games)
        self.env_counts = counts
        self.num_envs = sum(counts)
        self.clip_rewards = bool(clip_rewards)
        self.threads_per_game = threads_per_game(num_threads, len(games), max(counts))
        self.envs = [
            AtariVectorEnv(
                rom_id(g),
                count,
                num_threads=self.threads_per_game,
                max_num_frames_per_episode=max_episode_frames,
                repeat_action_probability=repeat_action_probability,
                full_action_space=True,
                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
                img_height=FRAME_SIZE,
                img_width=FRAME_SIZE,
                grayscale=True,
                stack_num=frame_stack,
                frameskip=frame_skip,
                maxpool=True,
                noop_max=noop_max,
                episodic_life=False,
                life_loss_info=False,
                reward_clipping=False,
                use_fire_reset=False,
            )
            for g, count in zip(self.games, counts, strict=True)
        ]
        # Games whose full action space is smaller than 18 (Skiing) get the shared actions
        # translated (full_action_map).
        self._action_maps = [full_action_map(g) for g in self.games]
        for g, env, amap in zip(self.games, self.envs, self._action_maps, strict=True):
            n = NUM_ACTIONS if amap is None else int(amap.max()) + 1
            if env.single_action_space != gym.spaces.Discrete(n):
                raise RuntimeError(f"{g}: expected {n} actions, got {env.single_action_space}")
        self.autoreset_mode = (gym.vector.AutoresetMode.SAME_STEP if autoreset
                               else gym.vector.AutoresetMode.DISABLED)
        self.metadata = {"autoreset_mode": self.autoreset_mode}
        self.single_observation_space = gym.spaces.Box(
            0, 255, shape=(frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8
        )
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

        ends = np.cumsum(counts).tolist()
        self._slices = [slice(end - c, end) for end, c in zip(ends, counts, strict=True)]
        # Per-episode emulator seeds come from this generator (so a seeded env is reproducible
        # whatever the order of partial resets).
        self.rng = np.random.default_rng(seed)
        self._started = False
        self._last_obs = np.zeros(
            (self.num_envs, frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8
        )
        # autoreset=False: envs whose episode ended, and the first frame of their next episode
        # (ale_py already started it on the step that ended the previous one).
        self._pending = np.zeros(self.num_envs, dtype=bool)
        self._next_first_obs = np.zeros_like(self._last_obs)

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.num_envs
        mask = np.ones(n, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (n,):
                raise ValueError(f"reset_mask must have shape ({n},), got {mask.shape}")
        if not self._started:
            mask = np.ones(n, dtype=bool)  # ale_py needs one full reset before partial ones
        if isinstance(seed, int):
            self.rng = np.random.default_rng(seed)
            seeds = self.rng.integers(0, 2**31 - 1, size=n)
        elif seed is not None:
            seeds = np.asarray(seed, dtype=np.int64)
            if seeds.shape != (n,):
                raise ValueError(f"a list of seeds needs one seed per env ({n})")
            # Later episodes' seeds follow from these (envs of remote runners, each reset
            # with its own list, draw different streams).
            self.rng = np.random.default_rng([int(x) % 2**63 for x in seeds])
        else:
            seeds = self.rng.integers(0, 2**31 - 1, size=n)
        # Pending envs (autoreset disabled) already run their next episode: hand out its first
        # frame unless an explicit seed asks for a fresh start.
        from_pending = mask & self._pending if seed is None else np.zeros(n, dtype=bool)
        real = mask & ~from_pending

        obs = self._last_obs.copy()
        obs[from_pending] = self._next_first_obs[from_pending]
        for env, sl in zip(self.envs, self._slices, strict=True):
            sub = real[sl]
            if not sub.any():
                continue
            sub_seeds = seeds[sl][sub]
            if sub.all():
                o, _ = env.reset(seed=sub_seeds)
            else:
                o, _ = env.reset(seed=sub_seeds, options={"reset_mask": sub})
            obs[sl][sub] = o[sub]
        self._pending &= ~mask
        self._started = True
        self._last_obs = obs
        return obs, {}

    # ------------------------------------------------------------------ step
    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("reset() the env before stepping it")
        if self._pending.any():
            raise RuntimeError(
                "step() on a finished episode: reset the finished envs first (autoreset disabled)"
            )
        a = np.ascontiguousarray(actions)
        if a.dtype != np.int64 and a.dtype != np.int32:
            a = a.astype(np.int64)
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {a.shape}")
        if a.min() < 0 or a.max() >= NUM_ACTIONS:
            raise ValueError(f"actions must be in [0, {NUM_ACTIONS}), got {a.min()}..{a.max()}")
        # All games emulate at the same time: send to every game, then collect.
        for env, sl, amap in zip(self.envs, self._slices, self._action_maps, strict=True):
            env.send(a[sl] if amap is None else amap[a[sl]])
        results = [env.recv() for env in self.envs]

        if len(results) == 1:
            obs, raw_reward, terminated, truncated, _ = results[0]
        else:
            obs = np.concatenate([r[0] for r in results])
            raw_reward = np.concatenate([r[1] for r in results])
            terminated = np.concatenate([r[2] for r in results])
            truncated = np.concatenate([r[3] for r in results])
        raw_reward = np.asarray(raw_reward, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool) & ~terminated
        reward = np.sign(raw_reward) if self.clip_rewards else raw_reward
        lives = np.concatenate([r[4]["lives"] for r in results])
        info: dict[str, Any] = {"raw_reward": raw_reward, "lives": lives}

        done = terminated | truncated
        if done.any():
            # ale_py already reset finished envs: ``obs`` holds their next episode's first
            # frame, and its ``final_obs`` the last frame of the episode that ended.
            final_obs = obs.copy()
            for r, sl in zip(results, self._slices, strict=True):
                sub = done[sl]
                if sub.any():
                    final_obs[sl][sub] = r[4]["final_obs"][sub]
            if self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP:
                info["final_obs"] = final_obs
                info["_final_obs"] = done
            else:
                self._next_first_obs[done] = obs[done]
                self._pending |= done
                obs = final_obs
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ misc
    @property
    def last_obs(self) -> np.ndarray:
        """The observation most recently returned by ``reset`` or ``step``."""
        return self._last_obs

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


class AtariMultiTaskEnv(MultiTaskVectorEnv):
    """MultiTaskVectorEnv over :class:`MultiGameAtariVectorEnv`; tasks are games."""

    env: MultiGameAtariVectorEnv
    forward_info_keys = ("raw_reward", "lives")

    def _episode_reward(self, reward: np.ndarray, raw_info: dict[str, Any]) -> np.ndarray:
        # Episode returns are game scores, whatever clipping or scaling ``step`` applies.
        return np.asarray(raw_info["raw_reward"], dtype=np.float32)

    # Human-normalized scores (random → 0, human → 1; mtrl.envs.atari_scores).
    score_fn = staticmethod(human_normalized_score)

    def native_action_set(self, task: str) -> list[int] | None:
        return list(minimal_action_set(task))

    def set_goals(self, goal_index: np.ndarray, mask: np.ndarray) -> None:
        # A game is its own single "goal": nothing to select (goals_per_task is 1).
        pass

    def set_terminate_on_success(self, flag: bool) -> None:
        # Atari has no success signal to end episodes on; evaluation episodes end at game over
        # or the time limit, as in the ALE protocol.
        pass

    def state_dict(self) -> dict[str, Any]:
        # The emulators' states are not saved: episodes restart on resume, with episode seeds
        # drawn from the restored generator.
        return {**super().state_dict(), "rng": self.env.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.env.rng = rng

    def render_frames(self, scale: int = 4) -> list[np.ndarray]:
        """What the agent sees: the newest 84×84 grayscale frame of each sub-env, enlarged
        ``scale`` times, as RGB. (ale_py's vector env does not expose the colour screen.)"""
        frames = []
        for stack in self.env.last_obs:
            gray = np.repeat(np.repeat(stack[-1], scale, axis=0), scale, axis=1)
            frames.append(np.repeat(gray[:, :, None], 3, axis=2))
        return frames


def make_atari_env(
    games: list[str],
    envs_per_game: int,
    *,
    seed: int,
    evaluation: bool = False,
    clip_rewards: bool = False,
    repeat_action_probability: float = 0.25,
    noop_max: int = 30,
    frame_skip: int = 4,
    frame_stack: int = 4,
    max_episode_frames: int = 108_000,
    num_threads: int = 0,
    env_tasks: list[int] | None = None,
) -> AtariMultiTaskEnv:
    """A multi-task env over ``games`` (mtrl game names, e.g. ``ATARI6``), ``envs_per_game``
    sub-envs each; sub-env ``i`` plays ``games[i // envs_per_game]``.

    ``env_tasks``: build only these envs, given by the global game index of each, in
    non-decreasing order (one remote env runner's share of the training envs,
    :mod:`mtrl.collect.ray`); task names and ids stay the whole set's.

    ``evaluation=True``: autoreset disabled (finished envs wait for a masked reset), as the
    evaluator expects. ``num_threads``: emulator worker threads in total (0: one per CPU core;
    see :func:`threads_per_game`). See the module docstring for the settings.
    """
    import ale_py

    if not 0.0 <= repeat_action_probability <= 1.0:
        raise ValueError(f"repeat_action_probability={repeat_action_probability} must be in "
                         "[0, 1]")
    task_ids = np.repeat(np.arange(len(games)), envs_per_game)
    played, counts = list(games), [envs_per_game] * len(games)
    if env_tasks is not None:
        if evaluation:
            raise ValueError("a subset of tasks is for training envs only")
        task_ids = np.asarray(env_tasks, dtype=np.int64)
        if (task_ids.size == 0 or (np.diff(task_ids) < 0).any() or task_ids.min() < 0
                or task_ids.max() >= len(games)):
            raise ValueError(f"env_tasks={env_tasks} must be non-decreasing game indices "
                             f"of the {len(games)} games")
        present, sizes = np.unique(task_ids, return_counts=True)
        played = [games[k] for k in present.tolist()]
        counts = sizes.tolist()
    inner = MultiGameAtariVectorEnv(
        played,
        counts,
        seed=seed,
        autoreset=not evaluation,
        clip_rewards=clip_rewards,
        repeat_action_probability=repeat_action_probability,
        noop_max=noop_max,
        frame_skip=frame_skip,
        frame_stack=frame_stack,
        max_episode_frames=max_episode_frames,
        num_threads=num_threads,
    )
    return AtariMultiTaskEnv(
        inner,
        list(games),
        task_ids,
        max_episode_steps=math.ceil(max_episode_frames / frame_skip),
        goals_per_task=1,
        benchmark={
            "name": "atari",
            "games": list(games),
            "has_success": False,
            "frame_skip": frame_skip,
            "frame_stack": frame_stack,
            "max_pool": True,
            "frame_size": [FRAME_SIZE, FRAME_SIZE],
            "grayscale": True,
            "sticky_actions": repeat_action_probability,
            "noop_max": noop_max,
            "full_action_space": True,
            "episodic_life": False,
            "fire_reset": False,
            "max_episode_frames": max_episode_frames,
            "episode_length": math.ceil(max_episode_frames / frame_skip),
            "reward_clipping": bool(clip_rewards),
            "episode_return": "unclipped game score",
            "ale_py": ale_py.__version__,
        },
    )


# ----------------------------------------------------------------------------------------------
# Registration: env.name = atari (the games in env.tasks)


def _check_atari(cfg: Any) -> None:
    """Game names against the ROMs ale_py ships, and ranges; no emulator is built."""
    from mtrl.errors import ConfigError

    valid = available_games()
    if not cfg.tasks:
        raise ConfigError(
            "env.tasks is empty; env.name='atari' needs a list of games, e.g. "
            f"--env.tasks Pong,Breakout. Valid names: {', '.join(valid)}"
        )
    bad = [t for t in cfg.tasks if t not in valid]
    if bad:
        raise ConfigError(f"env.tasks contains unknown Atari game(s) {bad}; valid names: "
                          + ", ".join(valid))
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError(f"env.tasks={cfg.tasks} lists a game twice")
    if not 0.0 <= cfg.sticky_actions <= 1.0:
        raise ConfigError(f"env.sticky_actions={cfg.sticky_actions!r} must be in [0, 1]")
    for name in ("noop_max", "num_threads"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"env.{name}={getattr(cfg, name)!r} must be >= 0")
    for name in ("frame_skip", "frame_stack"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"env.{name}={getattr(cfg, name)!r} must be > 0")
    if cfg.max_episode_frames < cfg.frame_skip:
        raise ConfigError(
            f"env.max_episode_frames={cfg.max_episode_frames} must be >= env.frame_skip="
            f"{cfg.frame_skip} (at least one agent step per episode)"
        )


def _build_atari(cfg: Any, *, seed: int, evaluation: bool = False, render: bool = False,
                 tasks: list[int] | None = None) -> AtariMultiTaskEnv:
    # Frames are always available (render_frames shows the agent's view): render is moot.
    return make_atari_env(
        cfg.tasks, 1 if evaluation else cfg.envs_per_task, seed=seed, evaluation=evaluation,
        clip_rewards=cfg.clip_rewards, repeat_action_probability=cfg.sticky_actions,
        noop_max=cfg.noop_max, frame_skip=cfg.frame_skip, frame_stack=cfg.frame_stack,
        max_episode_frames=cfg.max_episode_frames, num_threads=cfg.num_threads,
        env_tasks=tasks,
    )


register_env("atari", _build_atari, task_names=lambda cfg: list(cfg.tasks), check=_check_atari,
             discrete=True, image=True,
             uses=("tasks", "clip_rewards", "sticky_actions", "noop_max", "frame_skip",
                   "frame_stack", "max_episode_frames", "num_threads"), task_subsets=True)
