"""Registries: a name → builder (and its option checks) for every kind of part a run is made
of — environments, task-conditioned architectures, gradient combiners and agents.

Each built-in part registers itself where it is defined (``mtrl/envs/toy.py`` registers the toy
envs, ``mtrl/modules/nets.py`` the architectures, …); the config validator, the builders and
the CLI read the registries, so a name lives in one place and adding a part is one file. User
code adds its own parts the same way (``mtrl.register_architecture(...)`` in a plug-in module,
see :mod:`mtrl.plugins`).

A registry imports the modules of its built-in parts the first time it is asked for a name
(so that importing :mod:`mtrl.config` stays light), and then the plug-ins that installed
packages declare as entry points in the group ``mtrl.plugins`` (once per process). A name is
registered once: registering a taken name — built in or from another plug-in — is an error
unless ``replace=True``; to make that check complete, a registration from outside mtrl first
loads the built-in parts.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mtrl.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """A registered part: its ``name``, its ``build`` function, an optional ``check`` of its
    options (raises :class:`~mtrl.errors.ConfigError`) and free-form ``info`` (e.g. whether an
    env has discrete actions)."""

    name: str
    build: Callable[..., Any]
    check: Callable[..., None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    module: str = ""
    """The module that registered it (of ``build``), to name it when a plug-in's name clashes."""

    def __getitem__(self, key: str) -> Any:
        return self.info[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.info.get(key, default)


class Registry:
    """Names of one kind of part, each with its :class:`Entry`."""

    def __init__(self, kind: str, builtins: tuple[str, ...]) -> None:
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._loading = False

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in self._builtins:
                importlib.import_module(module)
            self._loaded = True
        finally:
            self._loading = False
        from mtrl.plugins import load_entry_points

        load_entry_points()

    def register(self, name: str, build: Callable[..., Any] | None = None, *,
                 check: Callable[..., None] | None = None, replace: bool = False,
                 **info: Any) -> Any:
        """Register ``build`` under ``name`` (or use as a decorator: ``@REG.register(name)``).
        Registering a taken name is a :class:`~mtrl.errors.ConfigError` (a ValueError) naming
        the module that holds it, unless ``replace``."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if not name or not isinstance(name, str):
                raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
            module = str(getattr(fn, "__module__", None) or "")
            if not _from_mtrl(module):
                self._load()  # a plug-in's name must not clash with a built-in loaded later
            old = self._entries.get(name)
            if old is not None and not replace:
                from mtrl.plugins import origin_of

                by = f" by {origin_of(old.module)}" if old.module else ""
                raise ConfigError(f"{self.kind} {name!r} is already registered{by}; choose "
                                  "another name, or pass replace=True to replace it")
            self._entries[name] = Entry(name, fn, check, dict(info), module)
            return fn

        return add if build is None else add(build)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def unregister_module(self, module: str) -> list[str]:
        """Remove every part that ``module`` registered (a plug-in that failed half-way);
        the names removed."""
        names = [n for n, e in self._entries.items() if e.module == module]
        for n in names:
            del self._entries[n]
        return names

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._load()
        return iter(list(self._entries.values()))

    def get(self, name: str, field_name: str | None = None) -> Entry:
        """The entry of ``name``; a ConfigError naming ``field_name`` (the config field that
        holds the name), the allowed names and the closest one if ``name`` is unknown."""
        self._load()
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(unknown_name_message(field_name or self.kind, name, self.names()))
        return entry


def _from_mtrl(module: str) -> bool:
    return module == "mtrl" or module.startswith("mtrl.")


def unknown_name_message(field_name: str, value: Any, allowed: list[str]) -> str:
    """``field=value is not valid; allowed: …`` with a "did you mean" for near misses."""
    msg = f"{field_name}={value!r} is not valid; allowed: {', '.join(map(str, allowed))}"
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg


ENVS = Registry("env", ("mtrl.envs.toy", "mtrl.envs.metaworld", "mtrl.envs.atari"))
ARCHITECTURES = Registry("architecture", ("mtrl.modules.nets",))
COMBINERS = Registry("combiner", ("mtrl.optim.combiners", "mtrl.optim.balancing"))
AGENTS = Registry("agent", ("mtrl.agents",))
REGISTRIES = (ENVS, ARCHITECTURES, COMBINERS, AGENTS)


def register_env(name: str, build: Callable[..., Any] | None = None, *,
                 task_names: Callable[[Any], list[str]],
                 check: Callable[[Any], None] | None = None, discrete: bool = False,
                 image: bool = False, uses: tuple[str, ...] = (), replace: bool = False,
                 task_subsets: bool = False) -> Any:
    """An environment: ``build(env_cfg, *, seed, evaluation, render) -> MultiTaskVectorEnv``,
    ``task_names(env_cfg)`` (known without building it), ``check(env_cfg)``, whether its
    actions are ``discrete`` and its observations ``image``s, and the env config fields it
    ``uses`` beyond ``name`` (the others must keep their defaults).

    ``task_subsets``: ``build`` also takes ``tasks=[k, ...]``, the global task id of each
    sub-env of a slice of the training env (sub-env ``i`` of the whole env plays task
    ``i // envs_per_task``), and returns the env of those sub-envs only, with the whole env's
    task names and global task ids; remote env runners (:mod:`mtrl.collect.ray`) split the
    envs over several processes with it."""
    return ENVS.register(name, build, check=check, task_names=task_names, discrete=discrete,
                         image=image, uses=tuple(uses), replace=replace,
                         task_subsets=task_subsets)


def register_architecture(name: str, build: Callable[..., Any] | None = None, *,
                          check: Callable[[Any], None] | None = None,
                          replace: bool = False) -> Any:
    """A task-conditioned network: ``build(in_dim, out_dim, num_tasks, hidden, arch_cfg)``
    returning a :class:`~mtrl.modules.nets.TaskNet` (``forward(x, task_id, per_task=None)``)."""
    return ARCHITECTURES.register(name, build, check=check, replace=replace)


def register_combiner(name: str, build: Callable[..., Any] | None = None, *,
                      balances_losses: bool = False, replace: bool = False) -> Any:
    """A gradient combiner: ``build(combiner_cfg)`` returning an object with the
    :class:`~mtrl.optim.combiners.Combiner` interface. ``balances_losses``: it weights tasks
    by their loss values, which needs non-negative losses (not the SAC actor's)."""
    return COMBINERS.register(name, build, balances_losses=balances_losses, replace=replace)


def register_agent(name: str, build: Callable[..., Any] | None = None, *,
                   data_path: Callable[..., Any], check: Callable[..., None] | None = None,
                   on_policy: bool = False, continuous_only: bool = False,
                   preflight: Callable[..., dict[str, str]] | None = None,
                   sections: tuple[str, ...] = (), remote_rollouts: bool = False,
                   compiles: bool = False, replace: bool = False) -> Any:
    """An agent: ``build(agent_cfg, *, obs_space, action_space, num_tasks, device)``,
    ``data_path(agent, train_cfg, env_spec, device)`` (:class:`~mtrl.agents.base.DataPath`),
    ``check(train_cfg, num_tasks)``, whether it is ``on_policy`` (acts with its own policy
    from the first step: no warm-up) or ``continuous_only``, and ``preflight(train_cfg,
    task_names)``, the checks of files it reads, run before any env is built. ``sections``:
    the algorithm sections of the agent config it reads (``sac``, ``a2c``, …).
    ``remote_rollouts``: an on-policy agent whose data path learns from unrolls that remote
    actors took with lagged weights (IMPALA), so it can run on Ray env runners.
    ``compiles``: its builder honours ``agent.compile`` (compiled / graph-captured updates,
    :mod:`mtrl.agents.compiling`); other agents accept only ``agent.compile=off``."""
    return AGENTS.register(name, build, check=check, data_path=data_path, on_policy=on_policy,
                           continuous_only=continuous_only, preflight=preflight,
                           sections=tuple(sections), remote_rollouts=remote_rollouts,
                           compiles=compiles, replace=replace)
