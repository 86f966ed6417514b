"""Plug-ins: user code that registers its own parts (environments, architectures, combiners,
agents) without editing mtrl.

A plug-in is an ordinary Python module that calls ``mtrl.register_env``,
``register_architecture``, ``register_combiner`` or ``register_agent`` when it is imported.
mtrl imports plug-ins from three places:

* ``--plugin MODULE`` on ``mtrl train | distill | eval | report | plot`` (repeatable):
  ``MODULE`` is a dotted module name importable from ``sys.path`` (an installed package, or a
  folder on ``PYTHONPATH``) or the path of a ``.py`` file. Plug-ins are imported before the
  config is validated, so their names are accepted like the built-in ones.
* **The run's config.** A run records the plug-ins it was trained with in ``plugins`` of its
  ``config.yaml`` (``.py`` files by absolute path), and :meth:`mtrl.rundir.RunDir.config`
  imports them when it reads the config — so ``mtrl eval RUN``, ``mtrl train --resume RUN``,
  ``mtrl report`` and ``mtrl.load(RUN)`` need no ``--plugin``.
* **Entry points** of installed packages in the group ``mtrl.plugins`` (``[project.entry-points
  ."mtrl.plugins"]`` in a ``pyproject.toml``: ``my-parts = "my_package.mtrl_parts"``, a module
  to import, or ``"my_package:register"``, a function called without arguments), loaded once,
  on the first look-up of any registry. ``MTRL_DISABLE_ENTRY_POINTS=1`` turns them off.

A plug-in that cannot be imported is a :class:`~mtrl.errors.ConfigError` of one line naming the
plug-in and the exception (and where in the plug-in it was raised), never a traceback.
Registering a name that is already taken (built in, or by another plug-in) is refused unless the
plug-in passes ``replace=True``.

Security: a plug-in is code that runs in the mtrl process, with your permissions. ``--plugin``
runs code you chose. A run directory names plug-ins in its ``config.yaml``, and *reading* it
(``mtrl eval``, ``report``, ``plot``, ``mtrl.load``, a distillation teacher) imports them, so a
run directory from somewhere else can make mtrl import code. To keep that to code already on
this machine, a run's recorded plug-ins are only ever imported as (a) a dotted module name that
is already importable — installed or on ``sys.path``; nothing is added to ``sys.path`` — or (b)
a ``.py`` file given by an absolute path that exists; relative paths and missing files are
refused with a message naming the config, and so are standard-library modules and files that
another user owns or that others may write. Read ``plugins:`` in a foreign run's ``config.yaml``
before evaluating it (``RunDir(path).config(plugins=False)`` reads it without importing).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from mtrl.errors import ConfigError

#: The entry-point group of installed plug-ins.
ENTRY_POINT_GROUP = "mtrl.plugins"
#: Set to 1 to skip the entry points of installed packages.
DISABLE_ENTRY_POINTS_ENV = "MTRL_DISABLE_ENTRY_POINTS"
#: The commands that take ``--plugin``.
CLI_COMMANDS = ("train", "distill", "eval", "report", "plot")

#: Recorded spec (absolute .py path or module name) → the imported module's name.
_loaded: dict[str, str] = {}
#: Module name → .py path, for the plug-ins imported from files.
_file_modules: dict[str, str] = {}
_entry_points_loaded = False


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a file (ends in ``.py`` or contains a path separator) rather
    than a dotted module name."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _valid_module_name(spec: str) -> bool:
    return all(part.isidentifier() for part in spec.split("."))


def resolve(spec: str, *, source: str | None = None) -> str:
    """The form of ``spec`` a run records: the absolute path of a ``.py`` file, or the module
    name. ``source``: the config file that names ``spec`` (a recorded plug-in), which must be
    an absolute path already; None for a command-line ``--plugin`` (relative to the working
    directory). Raises ConfigError for an empty name, a missing file or a malformed name."""
    where = f"{source} names plug-in {spec!r}" if source else f"plug-in {spec!r}"
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where}: an empty plug-in name; give a module name or a .py file")
    spec = spec.strip()
    if is_file_spec(spec):
        path = Path(spec).expanduser()
        if source is not None and not path.is_absolute():
            raise ConfigError(f"{where}: recorded plug-in files must be absolute paths (a run "
                              "never imports files relative to itself); fix the plugins list "
                              f"of {source}")
        if path.suffix != ".py":
            raise ConfigError(f"{where}: not a .py file nor a dotted module name")
        path = path.resolve() if source is None else path
        if not path.exists():
            hint = (f"; restore the file, or fix the plugins list of {source}" if source
                    else "")
            raise ConfigError(f"{where}: the file {path} does not exist{hint}")
        if not path.is_file():
            raise ConfigError(f"{where}: {path} is not a file")
        if source is not None:
            st = path.stat()
            if st.st_uid not in (os.getuid(), 0) or st.st_mode & 0o022:
                raise ConfigError(
                    f"{where}: {path} belongs to another user or others may write to it; a "
                    "run only imports plug-in files that you own and only you can change "
                    "(pass it with --plugin to use it anyway)")
        return str(path)
    if not _valid_module_name(spec):
        raise ConfigError(f"{where}: not a dotted module name (e.g. my_package.parts) nor a "
                          "path to a .py file")
    if source is not None and spec.split(".")[0] in sys.stdlib_module_names:
        raise ConfigError(f"{where}: a standard-library module is not an mtrl plug-in; fix "
                          f"the plugins list of {source}")
    return spec


def load_plugin(spec: str, *, source: str | None = None) -> str:
    """Import one plug-in (once per process) and return its recorded form (see
    :func:`resolve`). Raises ConfigError with one line naming the plug-in and the exception."""
    resolved = resolve(spec, source=source)
    if resolved in _loaded:
        return resolved
    where = f"{source} names plug-in {resolved!r}" if source else f"plug-in {resolved!r}"
    if is_file_spec(resolved):
        module = _import_file(resolved, where)
    else:
        module = _import_module(resolved, where)
    _loaded[resolved] = module.__name__
    return resolved


def load_plugins(specs: Iterable[str], *, source: str | None = None) -> list[str]:
    """Import plug-ins in order (:func:`load_plugin`); their recorded forms, without
    duplicates."""
    out: list[str] = []
    for spec in specs:
        resolved = load_plugin(spec, source=source)
        if resolved not in out:
            out.append(resolved)
    return out


def loaded_plugins() -> list[str]:
    """The plug-ins this process has imported through :func:`load_plugin`, in order."""
    return list(_loaded)


def origin_of(module_name: str) -> str:
    """A readable name for the module that registered a part: the ``.py`` path of a file
    plug-in, else the module name."""
    return _file_modules.get(module_name, module_name)


def _module_name_for(path: str) -> str:
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in Path(path).stem)
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    return f"mtrl_plugin_{stem}_{digest}"


def _import_file(path: str, where: str) -> ModuleType:
    name = _module_name_for(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses, pickling and typing need it
    _file_modules[name] = path
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        _forget(name)
        _file_modules.pop(name, None)
        raise ConfigError(f"{where} failed to import: {_describe(e, path)}") from None
    return module


def _import_module(name: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ConfigError(
                f"{where} cannot be imported: no module named {missing!r} (a plug-in module "
                "must be installed or on PYTHONPATH; give a file as a path ending in .py)"
            ) from None
        error: BaseException = e
    except (Exception, SystemExit) as e:
        error = e
    _forget(name)
    raise ConfigError(f"{where} failed to import: {_describe(error, _module_file(name))}") \
        from None


def _forget(module_name: str) -> None:
    """Drop what a plug-in that failed half-way registered, so that a fixed version can be
    imported again in the same process."""
    if "mtrl.registry" not in sys.modules:
        return
    from mtrl.registry import REGISTRIES

    for registry in REGISTRIES:
        registry.unregister_module(module_name)


def _module_file(name: str) -> str | None:
    """The file of module ``name`` (without importing it), or None."""
    loaded = getattr(sys.modules.get(name), "__file__", None)
    if loaded:
        return str(loaded)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _describe(e: BaseException, path: str | None) -> str:
    """``Type: message (at file:line)``: the deepest frame of the plug-in's own file, or of
    the last frame outside mtrl's import machinery."""
    text = " ".join(str(e).split()) or "(no message)"
    out = f"{type(e).__name__}: {text}"
    frames = traceback.extract_tb(e.__traceback__)
    here = [f for f in frames if path is not None and _same_file(f.filename, path)]
    if here:
        out += f" (at {here[-1].filename}:{here[-1].lineno})"
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


# ----------------------------------------------------------------------------------------------
# Entry points of installed packages


def load_entry_points() -> None:
    """Import the plug-ins that installed packages declare in the entry-point group
    :data:`ENTRY_POINT_GROUP`, once per process (the registries call this on their first
    look-up). An entry point naming a module imports it; one naming a callable
    (``package.module:register``) calls it without arguments. Raises ConfigError (one line,
    naming the entry point and its package) if one fails; it is not retried."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    if os.environ.get(DISABLE_ENTRY_POINTS_ENV, "").strip() not in ("", "0"):
        return
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution's metadata: no plug-ins from it
        return
    seen: set[str] = set()
    for ep in eps:
        if ep.value in seen:  # the same package seen twice on sys.path
            continue
        seen.add(ep.value)
        dist = getattr(getattr(ep, "dist", None), "name", None)
        where = (f"plug-in {ep.name!r} (entry point {ep.value!r} of package {dist!r} in group "
                 f"{ENTRY_POINT_GROUP!r})" if dist else
                 f"plug-in {ep.name!r} (entry point {ep.value!r} in group "
                 f"{ENTRY_POINT_GROUP!r})")
        module_name = ep.value.split(":", 1)[0].strip()
        try:
            obj = ep.load()
            if not isinstance(obj, ModuleType) and callable(obj):
                obj()
        except (Exception, SystemExit) as e:
            raise ConfigError(f"{where} failed to import: {_describe(e, _module_file(module_name))}"
                              f"; uninstall that package or set {DISABLE_ENTRY_POINTS_ENV}=1") \
                from None


# ----------------------------------------------------------------------------------------------
# The command line


def _flag_values(tokens: Sequence[str], flag: str) -> list[str]:
    """Values of ``flag VALUE`` / ``flag=VALUE`` in ``tokens``."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == flag and i + 1 < len(tokens):
            out.append(tokens[i + 1])
            i += 2
            continue
        if tok.startswith(flag + "="):
            out.append(tok[len(flag) + 1:])
        i += 1
    return out


def _without_flag(tokens: Sequence[str], flag: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == flag:
            i += 2
            continue
        if not tok.startswith(flag + "="):
            out.append(tok)
        i += 1
    return out


def prepare_cli(argv: list[str]) -> list[str]:
    """Import the ``--plugin`` modules of an ``mtrl`` command line before the command runs,
    and return the command line to run. For ``train`` and ``distill`` the plug-ins are also
    recorded in the run's config: the command line gets the override ``--plugins=A,B`` (with
    ``--resume``, the run's recorded plug-ins first; a config field ``--plugins`` given on the
    command line is imported and merged the same way)."""
    if not argv or argv[0] not in CLI_COMMANDS:
        return argv
    command, rest = argv[0], list(argv[1:])
    specs = _flag_values(rest, "--plugin")
    recording = command in ("train", "distill")
    if recording:
        for value in _flag_values(rest, "--plugins"):
            specs += [s for s in value.strip().strip("[]").split(",") if s.strip()]
    if not specs:
        return argv
    new = load_plugins(specs)
    if not recording:
        return argv
    for p in new:
        if "," in p or p.startswith("["):
            raise ConfigError(f"plug-in {p!r}: a plug-in path with ',' or a leading '[' "
                              "cannot be recorded in the run's config; rename it")
    recorded = new
    resume = _flag_values(rest, "--resume")
    if resume and resume[-1].strip():
        saved = _recorded_plugins(resume[-1])
        if saved is not None:
            recorded = saved + [p for p in new if p not in saved]
    return [command, *_without_flag(rest, "--plugins"), "--plugins=" + ",".join(recorded)]


def _recorded_plugins(run_dir: str) -> list[str] | None:
    """The plug-ins a run records (importing them), or None when it cannot be read (the
    command then says why)."""
    from mtrl.rundir import ResumeError, RunDir

    run = RunDir(run_dir)
    if not run.is_run():
        return None
    try:
        return list(run.config().plugins)
    except (ConfigError, ResumeError):
        return None
