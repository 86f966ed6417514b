"""stable-baselines3 interop: single-task SB3 teachers for policy distillation.

stable-baselines3 is an optional dependency (``pip install "mtrl[sb3]"``); it is imported only
inside the functions of this module, so ``import mtrl.sb3`` works without it.

* :func:`train_toy_teachers` trains one SB3 model per task of the point-reach toy
  (:class:`mtrl.envs.toy.PointReachTaskEnv`) and saves ``<out_dir>/goal-<k>.zip``;
* :func:`load_sb3_policy` rebuilds a saved model's policy whatever its algorithm (PPO, A2C, DQN,
  SAC) from the zip's plain JSON fields and weights, without unpickling anything;
* :func:`evaluate_sb3_success` measures a saved toy teacher's deterministic success.

The teacher settings (:data:`TOY_TEACHER_SETTINGS`) were chosen for speed on a 2-core CPU:
teachers of a 3-task toy reach deterministic success ≥ 0.9 in seconds (per teacher: discrete
PPO ~6 s, continuous PPO ~4 s, SAC ~7 s, DQN ~12 s, A2C ~4 s). Not every seed makes it:
check with :func:`evaluate_sb3_success` (``experiments/train_sb3_teachers.py`` prints it).
"""

from __future__ import annotations

import io
import json
import re
import struct
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.errors import ConfigError

SB3_MISSING = (
    "stable-baselines3 is not installed; install it with `pip install stable-baselines3` "
    '(or `pip install "mtrl[sb3]"`)'
)

SB3_ALGOS = ("ppo", "a2c", "dqn", "sac")
"""The SB3 algorithms mtrl can load as teachers (and train on the toy)."""


def require_sb3() -> Any:
    """The ``stable_baselines3`` module, or an ImportError that says how to install it."""
    try:
        import stable_baselines3
    except ImportError as e:
        raise ImportError(SB3_MISSING) from e
    return stable_baselines3


def _algo_classes() -> dict[str, Any]:
    sb3 = require_sb3()
    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN, "sac": sb3.SAC}


# ------------------------------------------------------------------------------ loading
# An SB3 model zip (stable_baselines3/common/save_util.py, ``save_to_zip_file``) holds
#   ``data``        JSON of the algorithm's attributes; a value JSON cannot hold is stored as
#                   ``{":type:": str(type), ":serialized:": base64(cloudpickle), <plain fields>}``
#                   where the plain fields are the object's first-level attributes (JSON values
#                   as they are, anything else as ``str()``);
#   ``policy.pth``  the policy's ``state_dict()`` saved with ``torch.save``;
#   other ``.pth``  optimizers and ``pytorch_variables`` (not needed to act).
# mtrl reads ``data`` as plain JSON and ``policy.pth`` with ``torch.load(weights_only=True)``,
# and never decodes a ``:serialized:`` value: unpickling one runs whatever code it names.

MAX_ZIP_ENTRIES = 256
"""Most entries an SB3 zip may list (SB3 writes at most about ten)."""
MAX_CENTRAL_DIRECTORY_BYTES = 1 << 20
"""Largest zip directory read (``zipfile`` loads the whole directory when it opens a zip)."""
MAX_DATA_BYTES = 32 << 20
"""Largest ``data`` entry read."""
MAX_WEIGHTS_BYTES = 1 << 30
"""Largest ``policy.pth`` entry read."""
MAX_SPACE_ELEMENTS = 1 << 22
"""Most elements of an observation or action space rebuilt from ``data``."""

_EOCD = b"PK\x05\x06"  # end of central directory record
_EOCD64_LOCATOR = b"PK\x06\x07"


class SB3ZipError(ConfigError):
    """An SB3 zip mtrl does not load; the one-line message names the file and the entry or
    ``data`` field at fault."""


def _one_line(text: object, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _refuse(path: Path, what: str) -> SB3ZipError:
    return SB3ZipError(_one_line(f"{path}: {what}", 600))


def _check_zip_directory(path: Path) -> None:
    """Refuse a zip whose directory is too large to read, before ``zipfile`` reads it.

    The end-of-central-directory record is found as ``zipfile`` finds it (at the very end, else
    the last one in the trailing 64 KiB comment); it gives the number of entries and the size
    of the directory. Zip64 end records (archives over 4 GiB or 65535 entries) are refused."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            n = min(size, 22 + 65535 + 20)
            f.seek(size - n)
            tail = f.read(n)
    except OSError as e:
        raise _refuse(path, f"cannot be read: {e.strerror or e}") from None
    start = len(tail) - 22
    if not (start >= 0 and tail[start:start + 4] == _EOCD and tail[-2:] == b"\0\0"):
        start = tail.rfind(_EOCD)
    if start < 0 or len(tail) - start < 22:
        raise _refuse(path, "is not a zip file (a stable-baselines3 model is a zip)")
    if start >= 20 and tail[start - 20:start - 16] == _EOCD64_LOCATOR:
        raise _refuse(path, "is a zip64 archive; stable-baselines3 models are plain zips")
    entries, cd_size = struct.unpack_from("<HI", tail, start + 10)
    if entries > MAX_ZIP_ENTRIES or cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise _refuse(path, f"lists {entries} entries in a {cd_size}-byte directory (limits "
                            f"{MAX_ZIP_ENTRIES} entries, {MAX_CENTRAL_DIRECTORY_BYTES} bytes)")


def _read_entry(z: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    """The bytes of entry ``name``, at most ``limit`` of them whatever its header says."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise _refuse(path, f"has no {name!r} entry: not a stable-baselines3 model "
                            "zip") from None
    if info.file_size > limit:
        raise _refuse(path, f"its {name!r} entry is {info.file_size} bytes (limit {limit})")
    try:
        with z.open(info) as f:
            raw = f.read(limit + 1)
    except Exception as e:  # any decompression failure (zlib, bz2, lzma, CRC, encryption)
        raise _refuse(path, f"its {name!r} entry cannot be read "
                            f"({type(e).__name__}: {_one_line(e, 120)})") from None
    if len(raw) > limit:
        raise _refuse(path, f"its {name!r} entry is over {limit} bytes")
    return raw


def _open_zip(path: str | Path) -> tuple[Path, zipfile.ZipFile]:
    path = Path(path)
    if not path.is_file():
        raise _refuse(path, "does not exist or is not a file")
    _check_zip_directory(path)
    try:
        return path, zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise _refuse(path, f"is not a readable zip file: {_one_line(e, 120)}") from None


def _parse_data(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, too deep
        raise _refuse(path, f"its 'data' entry is not JSON ({_one_line(e, 120)})") from None
    if not isinstance(data, dict):
        raise _refuse(path, "its 'data' entry is not a JSON object")
    return data


def read_sb3_data(path: str | Path) -> dict[str, Any]:
    """The ``data`` record of an SB3 zip as plain JSON: pickled values stay undecoded
    ``{":type:", ":serialized:", ...}`` dicts. Raises :class:`SB3ZipError`."""
    path, z = _open_zip(path)
    with z:
        return _parse_data(_read_entry(z, "data", MAX_DATA_BYTES, path), path)


def read_sb3_zip(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, state_dict)`` of an SB3 zip: the ``data`` record as plain JSON and the
    ``policy.pth`` tensors read with ``torch.load(weights_only=True)`` (no pickled object is
    built). Raises :class:`SB3ZipError`."""
    import torch

    path, z = _open_zip(path)
    with z:
        data = _parse_data(_read_entry(z, "data", MAX_DATA_BYTES, path), path)
        raw = _read_entry(z, "policy.pth", MAX_WEIGHTS_BYTES, path)
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # whatever the bytes are, a failure to parse them is a refusal
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        detail = f": it references {found.group(1)}" if found else ""
        raise _refuse(path, "its 'policy.pth' entry is not a weights-only PyTorch state dict "
                            f"({type(e).__name__}{detail})") from None
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                    and v.layout == torch.strided and v.is_floating_point()
                    for k, v in state.items())):
        raise _refuse(path, "its 'policy.pth' entry is not a state dict of named dense "
                            "floating-point tensors")
    return data, dict(state)


def _algo_from_data(data: dict[str, Any], path: Path) -> str:
    policy = data.get("policy_class")
    module = policy.get("__module__") if isinstance(policy, dict) else None
    if not isinstance(module, str):
        raise _refuse(path, "field 'policy_class' has no plain '__module__' (the policy class "
                            "is only in its pickle, which mtrl does not load)")
    if module == "stable_baselines3.dqn.policies":
        return "dqn"
    if module == "stable_baselines3.sac.policies":
        return "sac"
    if module in ("stable_baselines3.common.policies", "stable_baselines3.ppo.policies"):
        return "ppo" if "clip_range" in data or "n_epochs" in data else "a2c"
    raise _refuse(
        path, f"field 'policy_class': unsupported stable-baselines3 policy class (module "
              f"{module or '?'!r}); supported algorithms: {', '.join(a.upper() for a in SB3_ALGOS)}"
    )


def detect_sb3_algo(path: str | Path) -> str:
    """The algorithm (``ppo``, ``a2c``, ``dqn``, ``sac``) of a model saved by SB3's ``save``.

    Read from the plain fields of the zip's ``data`` record: the policy class's ``__module__``
    (``stable_baselines3.dqn.policies``, ``stable_baselines3.sac.policies``; other modules,
    custom policy classes included, are refused) names DQN and SAC policies; PPO and A2C share
    ``stable_baselines3.common.policies.ActorCriticPolicy`` and differ in their saved attributes
    (PPO has ``clip_range`` and ``n_epochs``)."""
    return _algo_from_data(read_sb3_data(path), Path(path))


# --- spaces from plain fields
_NUMBER = re.compile(r"[+-]?(?:inf|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_DTYPES = {"bool", *(f"{k}{b}" for k in ("int", "uint") for b in (8, 16, 32, 64)),
           "float16", "float32", "float64"}
_SPACE_TYPES = {
    f"<class '{pkg}.spaces.{mod}.{cls}'>": cls
    for pkg in ("gymnasium", "gym") for mod, cls in (("box", "Box"), ("discrete", "Discrete"))
}


def _pickled_record(data: dict[str, Any], field_name: str, path: Path) -> dict[str, Any]:
    rec = data.get(field_name)
    if not isinstance(rec, dict):
        raise _refuse(path, f"field {field_name!r} is missing from 'data'")
    return rec


def _shape_field(rec: dict[str, Any], field_name: str, path: Path) -> tuple[int, ...]:
    shape = rec.get("_shape", rec.get("shape"))
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(type(d) is int and d >= 0 for d in shape)):
        raise _refuse(path, f"field {field_name!r}: no plain shape ('_shape'); it is only in "
                            "the pickle, which mtrl does not load")
    if int(np.prod(shape, dtype=np.float64)) > MAX_SPACE_ELEMENTS:
        raise _refuse(path, f"field {field_name!r}: shape {shape} has over "
                            f"{MAX_SPACE_ELEMENTS} elements")
    return tuple(shape)


def _parse_bound(text: Any, shape: tuple[int, ...], dtype: np.dtype[Any], what: str,
                 path: Path) -> np.ndarray | None:
    """A Box bound from its printed form (``str(ndarray)`` or ``array_short_repr``), or None
    when ``text`` is null. A scalar is broadcast; numpy's summarized print of a large array
    (``[0 0 0 ... 0 0 0]``) is accepted only when every printed element is equal, and read as
    that value everywhere; otherwise the bound is refused."""
    if text is None:
        return None
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise _refuse(path, f"field {what} is not a printed array")
    text = str(text)
    tokens = re.findall(r"[^\s\[\],]+", text)
    summarized = "..." in tokens
    nums = [t for t in tokens if t != "..."]
    integer = dtype.kind in "iub"
    pattern = _INTEGER if integer and dtype.kind != "b" else _NUMBER
    if dtype.kind == "b":
        nums = ["1" if t == "True" else "0" if t == "False" else t for t in nums]
        pattern = _INTEGER
    if not nums or not all(pattern.fullmatch(t) for t in nums):
        raise _refuse(path, f"field {what} is not a printed {dtype} array: {text[:60]!r}")
    values = [int(t) for t in nums] if pattern is _INTEGER else [float(t) for t in nums]
    if integer and dtype.kind != "b":
        info = np.iinfo(dtype)
        if not all(info.min <= v <= info.max for v in values):
            raise _refuse(path, f"field {what} is out of range for {dtype}")
    size = int(np.prod(shape, dtype=np.int64))
    depth = len(text.lstrip()) - len(text.lstrip().lstrip("["))
    work = np.float64 if not integer else np.int64 if dtype.kind == "i" else np.uint64
    if len(values) == 1 and depth == 0:
        return np.full(shape, values[0], dtype=work).astype(dtype)
    if summarized:
        if len(set(values)) != 1:
            raise _refuse(path, f"field {what} is printed in summarized form with unequal "
                                "elements; its exact values are only in the pickle, which "
                                "mtrl does not load")
        return np.full(shape, values[0], dtype=work).astype(dtype)
    if len(values) == size and depth == len(shape):
        return np.asarray(values, dtype=work).astype(dtype).reshape(shape)
    raise _refuse(path, f"field {what} does not have shape {shape}: {text[:60]!r}")


def _space_from_data(data: dict[str, Any], field_name: str, path: Path) -> Any:
    """A Box or Discrete space rebuilt from the plain fields SB3 stores next to the pickled
    space: ``:type:``; for Box ``dtype``, ``_shape``, ``low``/``high`` (``str`` of the arrays)
    or ``low_repr``/``high_repr`` (a scalar when the bound is uniform); for Discrete ``n`` and
    ``start``."""
    import gymnasium as gym

    rec = _pickled_record(data, field_name, path)
    kind = _SPACE_TYPES.get(str(rec.get(":type:")))
    if kind is None:
        raise _refuse(path, f"field {field_name!r}: space type {rec.get(':type:')!r} is not "
                            "supported (Box or Discrete)")
    if kind == "Discrete":
        n, start = rec.get("n"), rec.get("start", "0")
        if not all(isinstance(v, int | str) and not isinstance(v, bool)
                   and _INTEGER.fullmatch(str(v)) for v in (n, start)):
            raise _refuse(path, f"field {field_name!r}: no plain 'n'/'start'; they are only "
                                "in the pickle, which mtrl does not load")
        n_i, start_i = int(str(n)), int(str(start))
        if not 0 < n_i <= MAX_SPACE_ELEMENTS or abs(start_i) > 2**62:
            raise _refuse(path, f"field {field_name!r}: Discrete n={n_i}, start={start_i} is "
                                "out of range")
        return gym.spaces.Discrete(n_i, start=start_i)
    dtype_name = rec.get("dtype")
    if dtype_name is None:
        raise _refuse(path, f"field {field_name!r}: no plain 'dtype'; it is only in the "
                            "pickle, which mtrl does not load")
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise _refuse(path, f"field {field_name!r}: dtype {_one_line(dtype_name, 40)!r} is "
                            "not supported")
    dtype = np.dtype(dtype_name)
    shape = _shape_field(rec, field_name, path)
    bounds = []
    for name in ("low", "high"):
        b = _parse_bound(rec.get(f"{name}_repr"), shape, dtype, f"{field_name}.{name}_repr",
                         path)
        if b is None:
            b = _parse_bound(rec.get(name), shape, dtype, f"{field_name}.{name}", path)
        if b is None:
            raise _refuse(path, f"field {field_name!r}: no plain {name!r}; it is only in the "
                                "pickle, which mtrl does not load")
        bounds.append(b)
    low, high = bounds
    if dtype.kind == "f" and (np.isnan(low).any() or np.isnan(high).any()):
        raise _refuse(path, f"field {field_name!r}: NaN bounds")
    if (low > high).any():
        raise _refuse(path, f"field {field_name!r}: low > high")
    try:
        return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    except (ValueError, TypeError, AssertionError) as e:
        raise _refuse(path, f"field {field_name!r}: not a valid Box ({_one_line(e, 120)})"
                      ) from None


# --- policy options from plain fields
_ACTIVATIONS = (
    "ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus", "Mish", "SELU",
    "CELU", "ReLU6", "Hardtanh", "Hardswish", "Hardsigmoid", "Tanhshrink", "Softsign",
    "LogSigmoid",
)
_DEFAULT_ACTIVATION = {"ppo": "Tanh", "a2c": "Tanh", "dqn": "ReLU", "sac": "ReLU"}
_EXTRACTORS = {f"<class 'stable_baselines3.common.torch_layers.{c}'>": c
               for c in ("FlattenExtractor", "NatureCNN")}
# policy_kwargs that do not change what a loaded policy computes: they are derived from the
# weights (net_arch, n_critics, share_features_extractor), only initialise or train
# (ortho_init, log_std_init, optimizer_*), or only apply with gSDE (refused).
_IGNORED_KWARGS = {"net_arch", "n_critics", "share_features_extractor", "ortho_init",
                   "log_std_init", "optimizer_class", "optimizer_kwargs", "full_std",
                   "use_expln", "clip_mean"}


@dataclass(frozen=True)
class _PolicyOptions:
    activation: str
    normalize_images: bool
    extractor: str | None  # the class named in policy_kwargs, if any
    extractor_kwargs: dict[str, Any]


def _policy_options(data: dict[str, Any], algo: str, path: Path) -> _PolicyOptions:
    """What the weights do not say, from the plain ``policy_kwargs`` (a JSON object, or the
    first-level fields next to its pickle: classes appear as ``"<class 'module.Name'>"``)."""
    rec = data.get("policy_kwargs") or {}
    if not isinstance(rec, dict) or rec.get(":type:", "<class 'dict'>") != "<class 'dict'>":
        raise _refuse(path, "field 'policy_kwargs' is not a plain dict")
    kw = {k: v for k, v in rec.items() if k not in (":type:", ":serialized:")}
    if ":serialized:" in rec and not kw:
        raise _refuse(path, "field 'policy_kwargs' has no plain fields next to its pickle, "
                            "which mtrl does not load")
    for name, value in (("use_sde", data.get("use_sde")),
                        ("policy_kwargs.use_sde", kw.get("use_sde")),
                        ("policy_kwargs.squash_output", kw.get("squash_output"))):
        if value is not None and not isinstance(value, bool):
            raise _refuse(path, f"field {name!r} is not a plain bool")
        if value:
            raise _refuse(path, f"field {name!r}: gSDE policies are not supported")
    activation = _DEFAULT_ACTIVATION[algo]
    if "activation_fn" in kw:
        m = re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>",
                         str(kw["activation_fn"]))
        if m is None or m.group(1) not in _ACTIVATIONS:
            raise _refuse(path, "field 'policy_kwargs.activation_fn': "
                                f"{_one_line(kw['activation_fn'], 80)!r} is not a supported "
                                f"torch.nn activation ({', '.join(_ACTIVATIONS)})")
        activation = m.group(1)
    normalize = kw.get("normalize_images", True)
    if not isinstance(normalize, bool):
        raise _refuse(path, "field 'policy_kwargs.normalize_images' is not a plain bool")
    extractor = None
    if kw.get("features_extractor_class") is not None:
        extractor = _EXTRACTORS.get(str(kw["features_extractor_class"]))
        if extractor is None:
            raise _refuse(path, "field 'policy_kwargs.features_extractor_class': "
                                f"{_one_line(kw['features_extractor_class'], 80)!r} is not "
                                "supported (FlattenExtractor or NatureCNN)")
    fek = kw.get("features_extractor_kwargs") or {}
    if not (isinstance(fek, dict) and set(fek) <= {"features_dim", "normalized_image"}
            and type(fek.get("features_dim", 0)) is int
            and isinstance(fek.get("normalized_image", False), bool)):
        raise _refuse(path, "field 'policy_kwargs.features_extractor_kwargs': only plain "
                            "features_dim and normalized_image are supported")
    known = _IGNORED_KWARGS | {"use_sde", "squash_output", "activation_fn", "normalize_images",
                               "features_extractor_class", "features_extractor_kwargs"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise _refuse(path, f"field 'policy_kwargs.{unknown[0]}' is not supported")
    return _PolicyOptions(activation, normalize, extractor, dict(fek))


# --- architecture from the weights
# Every parameter shape that follows from the spaces (plain data) is checked against the
# weights before a module is built, so that the modules built are never larger than the
# tensors read; the other shapes are the weights' own.
_NATURE_CNN_KEYS = frozenset(f"{m}.{i}.{p}" for m, i in (("cnn", 0), ("cnn", 2), ("cnn", 4),
                                                          ("linear", 0))
                             for p in ("weight", "bias"))
_INDEX = re.compile(r"[0-9]{1,6}")


def _under(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def _expect(state: dict[str, Any], key: str, shape: Sequence[int], path: Path) -> None:
    t = state.get(key)
    if t is None or tuple(t.shape) != tuple(shape):
        got = "missing" if t is None else f"shape {tuple(t.shape)}"
        raise _refuse(path, f"'policy.pth': {key} is {got}, the spaces in 'data' need shape "
                            f"{tuple(shape)}")


def _mlp_widths(state: dict[str, Any], prefix: str, in_features: int, path: Path) -> list[int]:
    """The output widths of the Linear layers of an SB3 MLP (``create_mlp``, ``MlpExtractor``:
    ``Linear, activation, Linear, ...`` in an ``nn.Sequential``, so Linear layers at 0, 2, 4...)
    stored under ``prefix``, the first taking ``in_features`` inputs."""
    sub = _under(state, prefix)
    heads = {k.split(".", 1)[0] for k in sub}
    if not all(_INDEX.fullmatch(h) for h in heads):
        raise _refuse(path, f"'policy.pth': {prefix} is not an SB3 MLP (parameters "
                            f"{sorted(sub)[:6]})")
    idx = sorted(int(h) for h in heads)
    if idx != list(range(0, 2 * len(idx), 2)) or len(sub) != 2 * len(idx):
        raise _refuse(path, f"'policy.pth': {prefix} is not an SB3 MLP (parameters "
                            f"{sorted(sub)[:6]})")
    widths: list[int] = []
    for i in idx:
        w = sub.get(f"{i}.weight")
        if w is None or w.dim() != 2:
            raise _refuse(path, f"'policy.pth': layer {prefix}.{i} is not a Linear layer")
        _expect(state, f"{prefix}.{i}.weight", (w.shape[0], widths[-1] if widths
                                                else in_features), path)
        _expect(state, f"{prefix}.{i}.bias", (w.shape[0],), path)
        widths.append(int(w.shape[0]))
    return widths


def _features(state: dict[str, Any], prefixes: Sequence[str], obs_space: Any, path: Path
              ) -> tuple[str, int]:
    """The features extractor stored under ``prefixes`` and its output width:
    ``FlattenExtractor`` (no parameters; the flattened observation) or ``NatureCNN`` (exactly
    its parameters, with the shapes the observation space implies)."""
    import gymnasium as gym

    subs = [_under(state, p) for p in prefixes]
    if not any(subs):
        return "FlattenExtractor", int(gym.spaces.flatdim(obs_space))
    for p, sub in zip(prefixes, subs, strict=True):
        if set(sub) != _NATURE_CNN_KEYS:
            raise _refuse(path, f"'policy.pth': {p} is neither a FlattenExtractor nor a "
                                f"NatureCNN (parameters {sorted(sub)[:6]})")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 3:
        raise _refuse(path, f"field 'observation_space': a NatureCNN needs a 3-D Box, not "
                            f"{obs_space}")
    shape = tuple(int(x) for x in obs_space.shape)
    c, h, w = shape
    for k, s in ((8, 4), (4, 2), (3, 1)):  # NatureCNN's convolutions
        h, w = (h - k) // s + 1, (w - k) // s + 1
    if h < 1 or w < 1:
        raise _refuse(path, f"field 'observation_space': {tuple(shape)} is too small for a "
                            "NatureCNN")
    dim_w = subs[0]["linear.0.weight"]
    if dim_w.dim() != 2:
        raise _refuse(path, f"'policy.pth': {prefixes[0]}.linear.0 is not a Linear layer")
    dim = int(dim_w.shape[0])
    for p in prefixes:
        for key, sh in (("cnn.0.weight", (32, c, 8, 8)), ("cnn.0.bias", (32,)),
                        ("cnn.2.weight", (64, 32, 4, 4)), ("cnn.2.bias", (64,)),
                        ("cnn.4.weight", (64, 64, 3, 3)), ("cnn.4.bias", (64,)),
                        ("linear.0.weight", (dim, 64 * h * w)), ("linear.0.bias", (dim,))):
            _expect(state, f"{p}.{key}", sh, path)
    return "NatureCNN", dim


def _equal(state: dict[str, Any], a: str, b: str) -> bool:
    import torch

    sa, sb = _under(state, a), _under(state, b)
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@dataclass(frozen=True)
class SB3Policy:
    """A policy rebuilt from an SB3 zip (:func:`load_sb3_policy`): the SB3 policy module
    (``ActorCriticPolicy``, ``DQNPolicy`` or ``SACPolicy``) with the zip's weights, its
    algorithm and the observation and action spaces it was trained on."""

    policy: Any
    algo: str
    observation_space: Any
    action_space: Any

    def predict(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """SB3's ``policy.predict`` (what ``model.predict`` runs; greedy for DQN)."""
        action, _ = self.policy.predict(obs, deterministic=deterministic)
        return np.asarray(action)


def _build_policy(algo: str, obs_space: Any, act_space: Any, state: dict[str, Any],
                  opts: _PolicyOptions, path: Path) -> Any:
    import gymnasium as gym
    from stable_baselines3.common import torch_layers
    from torch import nn

    common: dict[str, Any] = dict(activation_fn=getattr(nn, opts.activation),
                                  normalize_images=opts.normalize_images)
    discrete = isinstance(act_space, gym.spaces.Discrete)
    n_out = int(act_space.n) if discrete else int(np.prod(act_space.shape))
    if algo in ("ppo", "a2c"):
        from stable_baselines3.common.policies import ActorCriticPolicy

        cls: type[Any] = ActorCriticPolicy
        extractors = ["features_extractor", "pi_features_extractor", "vf_features_extractor"]
        kind, dim = _features(state, extractors, obs_space, path)
        if kind == "NatureCNN" and not _equal(state, extractors[0], extractors[1]):
            raise _refuse(path, "'policy.pth': features_extractor and pi_features_extractor "
                                "differ (they are one module in ActorCriticPolicy)")
        share = kind == "FlattenExtractor" or _equal(state, extractors[1], extractors[2])
        pi = _mlp_widths(state, "mlp_extractor.policy_net", dim, path)
        vf = _mlp_widths(state, "mlp_extractor.value_net", dim, path)
        _expect(state, "action_net.weight", (n_out, pi[-1] if pi else dim), path)
        _expect(state, "value_net.weight", (1, vf[-1] if vf else dim), path)
        if not discrete:
            if "log_std" in state and state["log_std"].dim() != 1:
                raise _refuse(path, "'policy.pth': log_std is not 1-D (gSDE policies are not "
                                    "supported)")
            _expect(state, "log_std", (n_out,), path)
        net_arch: Any = dict(pi=pi, vf=vf)
        common.update(share_features_extractor=share, ortho_init=False)
    elif algo == "dqn":
        from stable_baselines3.dqn.policies import DQNPolicy

        cls = DQNPolicy
        if not discrete:
            raise _refuse(path, "field 'action_space': a DQN policy needs a Discrete space")
        kind, dim = _features(
            state, ["q_net.features_extractor", "q_net_target.features_extractor"], obs_space,
            path)
        widths = _mlp_widths(state, "q_net.q_net", dim, path)
        if not widths or widths[-1] != n_out:
            raise _refuse(path, f"'policy.pth': the Q-network does not output the {n_out} "
                                "actions of 'action_space'")
        _mlp_widths(state, "q_net_target.q_net", dim, path)
        net_arch = widths[:-1]
    else:  # sac
        from stable_baselines3.sac.policies import SACPolicy

        cls = SACPolicy
        if not isinstance(act_space, gym.spaces.Box):
            raise _refuse(path, "field 'action_space': a SAC policy needs a Box space")
        extractors = ["actor.features_extractor", "critic.features_extractor",
                      "critic_target.features_extractor"]
        kind, dim = _features(state, extractors, obs_space, path)
        if "actor.log_std.weight" not in state:
            raise _refuse(path, "'policy.pth': no actor.log_std layer (gSDE policies are not "
                                "supported)")
        pi = _mlp_widths(state, "actor.latent_pi", dim, path)
        for head in ("mu", "log_std"):
            _expect(state, f"actor.{head}.weight", (n_out, pi[-1] if pi else dim), path)
        critics = sorted({k.split(".")[1] for k in state if k.startswith("critic.qf")})
        if not critics or critics != [f"qf{i}" for i in range(len(critics))]:
            raise _refuse(path, f"'policy.pth': critic networks {critics[:4]} are not SB3's")
        qf = [_mlp_widths(state, f"{net}.{c}", dim + n_out, path)
              for net in ("critic", "critic_target") for c in critics]
        if any(w != qf[0] for w in qf) or not qf[0] or qf[0][-1] != 1:
            raise _refuse(path, "'policy.pth': the critic networks are not SB3's (one output, "
                                "all alike)")
        net_arch = dict(pi=pi, qf=qf[0][:-1])
        share = kind == "NatureCNN" and _equal(state, extractors[0], extractors[1])
        common.update(n_critics=len(critics), share_features_extractor=share)
    if opts.extractor is not None and opts.extractor != kind:
        raise _refuse(path, f"field 'policy_kwargs.features_extractor_class' names "
                            f"{opts.extractor} but 'policy.pth' holds a {kind}")
    fek = dict(opts.extractor_kwargs)
    if kind == "NatureCNN":
        if fek.get("features_dim", dim) != dim:
            raise _refuse(path, "field 'policy_kwargs.features_extractor_kwargs.features_dim' "
                                "does not match 'policy.pth'")
        fek["features_dim"] = dim
    elif fek:
        raise _refuse(path, "field 'policy_kwargs.features_extractor_kwargs' is set for a "
                            "FlattenExtractor")
    try:
        policy = cls(obs_space, act_space, lr_schedule=lambda _: 0.0, net_arch=net_arch,
                     features_extractor_class=getattr(torch_layers, kind),
                     features_extractor_kwargs=fek, **common)
    except (AssertionError, ValueError, RuntimeError, TypeError) as e:
        raise _refuse(path, f"the {algo.upper()} policy described by 'data' and 'policy.pth' "
                            f"cannot be built ({type(e).__name__}: {_one_line(e, 160)})"
                      ) from None
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise _refuse(path, f"'policy.pth' does not fit the {algo.upper()} policy rebuilt from "
                            f"it ({_one_line(e, 200)})") from None
    return policy


def load_sb3_policy(path: str | Path, device: Any = "cpu") -> SB3Policy:
    """The policy of an SB3 model zip (PPO, A2C, DQN, SAC), rebuilt for inference on
    ``device`` without unpickling anything.

    * Algorithm: :func:`detect_sb3_algo` (``data["policy_class"]["__module__"]``, PPO's
      ``clip_range``/``n_epochs``).
    * Spaces: the plain fields of ``data["observation_space"]`` / ``["action_space"]``
      (:func:`_space_from_data`; Box and Discrete). Bounds are read from their printed form,
      exact for the values numpy prints in full (e.g. ±1.5, ±inf, 0 and 255).
    * Architecture, from ``policy.pth``'s keys and shapes: the hidden widths of every MLP
      (``mlp_extractor.policy_net/value_net``; ``q_net.q_net``; ``actor.latent_pi`` and
      ``critic.qf<i>``, whose count is ``n_critics``); the features extractor (no parameters:
      ``FlattenExtractor``; ``cnn.0/2/4`` and ``linear.0``: ``NatureCNN`` with the width of
      ``linear.0``); ``share_features_extractor`` (the policy's and value's, or actor's and
      critic's, extractor weights are equal).
    * From the plain ``policy_kwargs``: ``activation_fn`` (a ``torch.nn`` activation named as
      ``"<class 'torch.nn.modules.activation.ReLU'>"``), ``normalize_images``,
      ``features_extractor_kwargs``. Activations have no weights: without ``activation_fn``
      SB3's defaults apply (``nn.Tanh`` for PPO/A2C's ``ActorCriticPolicy``, ``nn.ReLU`` for
      DQN and SAC).

    The policy class is then constructed directly and ``load_state_dict(strict=True)`` takes
    the weights. gSDE policies, other spaces, features extractors or ``policy_kwargs``, and
    anything needed that only the pickles hold, are refused with an :class:`SB3ZipError` (a
    ``ConfigError``) naming the file and the field."""
    require_sb3()
    path = Path(path)
    data, state = read_sb3_zip(path)
    algo = _algo_from_data(data, path)
    obs_space = _space_from_data(data, "observation_space", path)
    act_space = _space_from_data(data, "action_space", path)
    opts = _policy_options(data, algo, path)
    policy = _build_policy(algo, obs_space, act_space, state, opts, path)
    policy = policy.to(device)
    policy.set_training_mode(False)
    return SB3Policy(policy, algo, obs_space, act_space)


# ------------------------------------------------------------------------------ toy teachers
@dataclass(frozen=True)
class TeacherSettings:
    """How to train one SB3 teacher: the number of parallel envs, the constructor's keyword
    arguments and the default number of env steps."""

    n_envs: int
    timesteps: int
    kwargs: dict[str, Any] = field(default_factory=dict)


TOY_TEACHER_SETTINGS: dict[tuple[str, bool], TeacherSettings] = {
    # (algo, discrete) -> settings. Small 32-32 nets; γ = 0.95 (episodes are 50 steps and the
    # goal is ~10 steps away); large learning rates because the tasks are easy.
    # Discrete PPO: 30k steps left 1 of 6 seed-0/1 teachers at 0.50 success; 50k gave 11/12
    # teachers >= 0.9 (one 0.85) over 4 seeds.
    ("ppo", True): TeacherSettings(8, 50_000, dict(
        n_steps=64, batch_size=256, n_epochs=4, learning_rate=3e-3, gamma=0.95, ent_coef=0.0,
        policy_kwargs=dict(net_arch=[32, 32]))),
    ("ppo", False): TeacherSettings(8, 30_000, dict(
        n_steps=64, batch_size=256, n_epochs=4, learning_rate=3e-3, gamma=0.95, ent_coef=0.0,
        policy_kwargs=dict(net_arch=[32, 32]))),
    # A2C is the least reliable here (seed 1: one teacher at 0.25); prefer PPO.
    ("a2c", True): TeacherSettings(8, 30_000, dict(
        n_steps=8, learning_rate=3e-3, gamma=0.95, policy_kwargs=dict(net_arch=[32, 32]))),
    ("dqn", True): TeacherSettings(1, 10_000, dict(
        learning_starts=500, batch_size=64, learning_rate=1e-3, gamma=0.95,
        exploration_fraction=0.3, target_update_interval=250, train_freq=1,
        policy_kwargs=dict(net_arch=[32, 32]))),
    ("sac", False): TeacherSettings(1, 2_000, dict(
        learning_starts=200, batch_size=64, learning_rate=3e-3, gamma=0.95,
        policy_kwargs=dict(net_arch=[32, 32]))),
}


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Small networks train fastest on one thread; the previous setting is restored."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy_teacher(
    path: str | Path,
    num_tasks: int,
    task: int,
    *,
    discrete: bool,
    total_timesteps: int | None = None,
    seed: int = 0,
    algo: str = "ppo",
    torch_threads: int | None = 1,
) -> Path:
    """Train one SB3 model on task ``task`` of the ``num_tasks``-task point-reach and save it to
    ``path`` (``.zip``). ``total_timesteps`` defaults to the settings' budget. Note that SB3
    seeds the global torch/numpy/random generators from ``seed``."""
    from mtrl.envs.toy import PointReachTaskEnv

    algo = algo.lower()
    settings = TOY_TEACHER_SETTINGS.get((algo, discrete))
    if settings is None:
        allowed = ", ".join(f"{a} ({'discrete' if d else 'continuous'})"
                            for a, d in TOY_TEACHER_SETTINGS)
        raise ValueError(f"algo={algo!r} with discrete={discrete} is not supported; "
                         f"allowed: {allowed}")
    cls = _algo_classes()[algo]
    from stable_baselines3.common.env_util import make_vec_env

    def make() -> PointReachTaskEnv:
        return PointReachTaskEnv(num_tasks, task, discrete=discrete)

    steps = settings.timesteps if total_timesteps is None else int(total_timesteps)
    with _torch_threads(torch_threads):
        venv = make_vec_env(make, n_envs=settings.n_envs, seed=seed)
        model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **settings.kwargs)
        model.learn(total_timesteps=steps)
        venv.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    # SB3 appends .zip when missing
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def train_toy_teachers(
    out_dir: str | Path,
    num_tasks: int,
    *,
    discrete: bool,
    total_timesteps: int | None = None,
    seed: int = 0,
    algo: str = "ppo",
    torch_threads: int | None = 1,
) -> dict[str, Path]:
    """One SB3 teacher per task of the point-reach toy: ``<out_dir>/goal-<k>.zip`` for
    ``k < num_tasks``, trained with :data:`TOY_TEACHER_SETTINGS` for ``total_timesteps`` env
    steps *each* (default: the settings' budget), task ``k`` with seed ``seed + k``. Writes
    ``<out_dir>/teachers.json`` (algo, steps, seconds per teacher) and returns task → path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    record: dict[str, Any] = {"num_tasks": num_tasks, "discrete": discrete, "algo": algo,
                              "seed": seed, "teachers": {}}
    for k in range(num_tasks):
        name = f"goal-{k}"
        t0 = time.perf_counter()
        paths[name] = train_toy_teacher(
            out / f"{name}.zip", num_tasks, k, discrete=discrete,
            total_timesteps=total_timesteps, seed=seed + k, algo=algo,
            torch_threads=torch_threads,
        )
        record["teachers"][name] = {"path": paths[name].name,
                                    "seconds": round(time.perf_counter() - t0, 2)}
    (out / "teachers.json").write_text(json.dumps(record, indent=2) + "\n")
    return paths


def evaluate_sb3_success(
    path: str | Path,
    task: int,
    num_tasks: int,
    *,
    discrete: bool,
    episodes: int = 20,
    seed: int = 1_000,
) -> float:
    """Deterministic success rate of a saved SB3 toy teacher on its task: the fraction of
    ``episodes`` episodes with ``info["success"]`` at any step (the mtrl protocol)."""
    from mtrl.envs.toy import PointReachTaskEnv

    teacher = load_sb3_policy(path)
    env = PointReachTaskEnv(num_tasks, task, discrete=discrete, seed=seed)
    wins = []
    env.reset(seed=seed)
    for _ in range(episodes):
        obs, _ = env.reset()
        success = False
        while True:
            action = teacher.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            success |= bool(info["success"])
            if terminated or truncated:
                break
        wins.append(success)
    return float(np.mean(wins))
