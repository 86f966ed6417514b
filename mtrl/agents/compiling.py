"""Compiled and graph-captured updates (``agent.compile``: off | default | graphs).

The approach is LeanRL's (pytorch-labs/LeanRL, "LeanRL - Turbo-implementations of CleanRL
scripts": ``sac_continuous_action_torchcompile.py``, ``ppo_continuous_action_torchcompile.py``):
compile the functions that compute the losses and the functions that step
the optimizers with ``torch.compile``, keep every host synchronization out of them, and let each
``backward()`` sit between two compiled pieces (its gradient graph is compiled together with
the forward that produced it, by AOTAutograd). On CUDA, ``graphs`` compiles the same pieces with
``mode="reduce-overhead"``, which records each piece (forward, backward, optimizer step) as a
CUDA graph and replays it with one launch (Nvidia, "Accelerating PyTorch with CUDA Graphs").

An agent splits its update into *phases* (MT-SAC: critic targets with the PopArt statistics
step, critic loss, critic step + actor loss, actor/π0/temperature steps + target update; A2C and
PPO: targets with the PopArt step, loss, optimizer step) and runs each through
:meth:`UpdateCompiler.run`. PopArt's statistics step rescales the value heads in place; it is a
no-gradient phase of its own because an in-place update of a parameter inside the graph that
also differentiates it gave wrong gradients under AOTAutograd (errors of 1e-4 after a few
updates, which tests/test_compile.py catches; split, compiled and eager updates agree to ~1e-11
in float64). What stays eager, and why:

* the gradient combiner's ``backward`` (:mod:`mtrl.optim.combiners`): it keeps Python-side state
  (its step count, loss histories, diagnostics schedule) that a compiled graph would bake in;
* a loss phase whose combiner records per-task gradients in that update (PCGrad at every update,
  any combiner on its diagnostics updates): the recording forward hooks
  (:mod:`mtrl.optim.task_grads`) need the eager autograd graph of every layer, which a compiled
  forward replaces by one fused node;
* routed architectures (``routing``): their routers sample routes and learn by REINFORCE from
  per-sample losses recorded on the Python side.

Each eager fallback is recorded once (:attr:`UpdateCompiler.notes`); the run writes the notes to
its log and ``metadata.json`` (``compile``). Random numbers: the reparameterization noise is
drawn eagerly from the device's generator right before the phase that uses it and passed in,
so a compiled update draws exactly the numbers the eager one draws (compiled code would
otherwise use the compiler's own random-number generator) and a captured graph replays with
fresh noise.

``graphs`` on a CPU device compiles only (CUDA graphs need CUDA) and says so in the notes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mtrl.config import COMPILE_MODES


def cpu_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (Inductor) would call, if one exists."""
    import os
    import shutil

    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def resolve_compile_mode(requested: str, device: torch.device | str) -> tuple[str, list[str]]:
    """The mode that runs on ``device`` for the requested ``agent.compile`` value, and the notes
    that explain a difference (``graphs`` on a CPU device compiles only)."""
    if requested not in COMPILE_MODES:
        raise ValueError(f"agent.compile={requested!r} is not valid; allowed: "
                         + ", ".join(COMPILE_MODES))
    device = torch.device(device)
    if requested != "off" and device.type == "cpu" and cpu_compiler() is None:
        raise ValueError(f"agent.compile={requested!r} on a CPU device needs a C++ compiler "
                         "for torch.compile's CPU code (g++, c++ or clang++ on PATH, or $CXX); "
                         "install one or use agent.compile=off")
    if requested == "graphs" and device.type != "cuda":
        return "default", [f"agent.compile='graphs' captures CUDA graphs, which need a CUDA "
                           f"device; on {device.type} the update is compiled only "
                           "(torch.compile, no graph capture)"]
    return requested, []


class UpdateCompiler:
    """Runs the phases of an agent's update eagerly or compiled, per ``agent.compile``.

    ``run(name, fn, *args, eager=reason)`` calls ``fn(*args)``: compiled (one compiled function
    per phase ``name``, built at its first call) unless the mode is ``off`` or ``eager`` gives
    a reason to run this call eagerly (recorded once in :attr:`notes`)."""

    def __init__(self, requested: str = "off", device: torch.device | str = "cpu") -> None:
        self.requested = requested
        self.mode, notes = resolve_compile_mode(requested, device)
        self.notes: list[str] = list(notes)
        self._fns: dict[str, Callable[..., Any]] = {}

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @property
    def graphs(self) -> bool:
        return self.mode == "graphs"

    def note(self, text: str) -> None:
        """Record why a part runs eagerly (once per distinct text)."""
        if text not in self.notes:
            self.notes.append(text)

    def run(self, name: str, fn: Callable[..., Any], *args: Any, eager: str | None = None
            ) -> Any:
        if not self.active:
            return fn(*args)
        if eager is not None:
            self.note(eager)
            return fn(*args)
        compiled = self._fns.get(name)
        if compiled is None:
            mode = "reduce-overhead" if self.graphs else None
            compiled = torch.compile(fn, mode=mode, dynamic=False)
            self._fns[name] = compiled
        return compiled(*args)

    def step_begin(self) -> None:
        """Start of one update: with CUDA graphs, tell the graph trees that the outputs of the
        previous update are no longer read (so its memory can be reused)."""
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def own(self, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Metrics that outlive the update: a replayed CUDA graph overwrites its outputs, so
        with ``graphs`` they are copied out (one stack, one copy; still device tensors, no host
        synchronization)."""
        if not self.graphs or not metrics:
            return metrics
        keys = list(metrics)
        values = torch.stack([metrics[k].reshape(()).float() for k in keys]).clone()
        return dict(zip(keys, values.unbind(0), strict=True))

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor output of a phase that is read after later updates (a copy with CUDA
        graphs, whose replays overwrite their outputs)."""
        return tensor.clone() if self.graphs else tensor

    def info(self) -> dict[str, Any]:
        """What ``metadata.json`` records under ``compile``."""
        return {"requested": self.requested, "mode": self.mode, "notes": list(self.notes)}


def armed(combiner: Any) -> bool:
    """Whether ``combiner`` records per-task gradients in this update (its forward hooks must
    see the eager autograd graph)."""
    tracker = getattr(combiner, "tracker", None)
    return bool(getattr(tracker, "armed", False))


def compile_blocker(combiner: Any, routers: list[Any], network: str, *, ever: bool = False
                    ) -> str | None:
    """Why this update's ``network`` loss phase must run eagerly (None: it can be compiled):
    routed architectures, and combiners that record per-task gradients in this update (with
    ``ever``: in any update, the note an agent records when it is built)."""
    if routers:
        return (f"{network} loss: eager, the routing network's routers learn by REINFORCE from "
                "routes and losses recorded on the Python side")
    records = armed(combiner)
    if ever:
        records = bool(getattr(combiner, "needs_task_grads", False)
                       or getattr(combiner, "diagnostics_every", 0))
    if records:
        name = getattr(combiner, "name", type(combiner).__name__)
        return (f"{network} loss: eager in updates where the {name!r} combiner records "
                "per-task gradients (its forward hooks need the eager autograd graph of every "
                "layer)")
    return None


def note_blockers(compiler: UpdateCompiler, parts: list[tuple[Any, list[Any], str]]) -> None:
    """Record, when an agent is built, the notes of the loss phases that will run eagerly in
    some updates (``parts``: ``(combiner, routers, network)``)."""
    if not compiler.active:
        return
    for combiner, routers, network in parts:
        reason = compile_blocker(combiner, routers, network, ever=True)
        if reason is not None:
            compiler.note(reason)
