"""Plug-ins: user parts registered from outside the library (``--plugin``, a run's recorded
``plugins``, entry points), end to end through the CLI in real processes, with the two
examples of the README (examples/rlw_combiner.py, examples/layernorm_mlp.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mtrl import config as C
from mtrl import plugins
from mtrl.errors import ConfigError
from mtrl.registry import ARCHITECTURES, COMBINERS, REGISTRIES
from mtrl.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
RLW = EXAMPLES / "rlw_combiner.py"

TINY = ("--total-steps", "400", "--warmup-steps", "200", "--agent.batch-size", "32",
        "--agent.actor-hidden", "16,16", "--agent.critic-hidden", "16,16", "--device", "cpu",
        "--no-progress", "--eval.episodes-per-task", "1")


def _mtrl(*args: str, cwd: Path, pythonpath: Path | None = None,
          extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "mtrl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout


def _one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("mtrl: error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def isolated_plugins():
    """Plug-ins imported by a test are forgotten afterwards: registries, the loaded list and
    their modules are restored (other tests list the built-in names exactly)."""
    for registry in REGISTRIES:
        registry.names()  # built-ins and entry points loaded before the snapshot
    saved = [(r, dict(r._entries)) for r in REGISTRIES]
    loaded, files = dict(plugins._loaded), dict(plugins._file_modules)
    modules = set(sys.modules)
    yield
    for registry, entries in saved:
        registry._entries.clear()
        registry._entries.update(entries)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    plugins._file_modules.clear()
    plugins._file_modules.update(files)
    for name in set(sys.modules) - modules:
        if name.startswith("mtrl_plugin_") or name in ("layernorm_mlp", "rlw_combiner"):
            del sys.modules[name]


# ----------------------------------------------------------------------------------------------
# The two examples, end to end through the CLI


def test_rlw_combiner_file_plugin_trains_evaluates_and_resumes(tmp_path, isolated_plugins):
    run = tmp_path / "rlw"
    # A relative .py path (from the repository root) is recorded as an absolute path.
    _ok(_mtrl("train", "toy-mtsac", "--plugin", "examples/rlw_combiner.py",
              "--agent.critic-combiner", "rlw", "--run-dir", str(run), *TINY, cwd=REPO))
    assert RunDir(run).config(plugins=False).plugins == [str(RLW)]
    # Elsewhere, without --plugin: the run's config names the plug-in.
    out = _ok(_mtrl("eval", str(run), "--device", "cpu", cwd=tmp_path))
    assert "goal-0" in out
    out = _ok(_mtrl("train", "--resume", str(run), "--total-steps", "600", cwd=tmp_path))
    assert "env steps 6" in out
    # --plugin naming the recorded plug-in again is no change to the run's config.
    _ok(_mtrl("train", "--resume", str(run), "--total-steps", "700", "--plugin", str(RLW),
              cwd=tmp_path))
    # In Python, mtrl.load imports it too, and the critic's combiner is the plug-in's.
    import mtrl

    policy = mtrl.load(run)
    assert policy.agent.critic_combiner.name == "rlw"
    assert RunDir(run).config().agent.critic_combiner == "rlw"


def test_layernorm_architecture_module_plugin_trains_evaluates_and_resumes(
        tmp_path, isolated_plugins, monkeypatch):
    run = tmp_path / "ln"
    # A dotted module name importable from sys.path (here: PYTHONPATH) is recorded as is.
    _ok(_mtrl("train", "toy-mtsac", "--plugin", "layernorm_mlp",
              "--agent.actor-arch", "layernorm-mlp", "--agent.critic-arch", "layernorm-mlp",
              "--run-dir", str(run), *TINY, cwd=tmp_path, pythonpath=EXAMPLES))
    assert RunDir(run).config(plugins=False).plugins == ["layernorm_mlp"]
    _ok(_mtrl("eval", str(run), "--device", "cpu", cwd=tmp_path, pythonpath=EXAMPLES))
    _ok(_mtrl("train", "--resume", str(run), "--total-steps", "600", cwd=tmp_path,
              pythonpath=EXAMPLES))
    # Without the module on sys.path, reading the run says which plug-in is missing.
    _one_line_error(_mtrl("eval", str(run), cwd=tmp_path), "config.yaml",
                    "no module named 'layernorm_mlp'")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import mtrl

    policy = mtrl.load(run)
    assert any(isinstance(m, nn.LayerNorm) for m in policy.agent.actor.modules())
    assert policy.predict(torch.zeros(2).numpy(), "goal-1").shape == (2,)


# ----------------------------------------------------------------------------------------------
# Errors: one line, never a traceback


def test_missing_and_clashing_plugins_are_one_line_errors(tmp_path):
    _one_line_error(_mtrl("train", "toy-mtsac", "--plugin", "no_such_mtrl_plugin_xyz",
                          cwd=tmp_path), "plug-in 'no_such_mtrl_plugin_xyz'",
                    "no module named 'no_such_mtrl_plugin_xyz'")
    _one_line_error(_mtrl("eval", "somewhere", "--plugin", "gone.py", cwd=tmp_path),
                    "gone.py", "does not exist")
    dup = tmp_path / "dup.py"
    dup.write_text("import mtrl\nfrom mtrl.optim.combiners import MeanCombiner\n\n"
                   "mtrl.register_combiner('mean', lambda cfg: MeanCombiner())\n")
    line = _one_line_error(_mtrl("train", "toy-mtsac", "--plugin", "dup.py", cwd=tmp_path),
                           str(dup), "combiner 'mean' is already registered",
                           "mtrl.optim.combiners", "replace=True", f"{dup}:4")
    assert "ConfigError" in line


def test_a_run_imports_only_installed_modules_and_existing_absolute_py_files(
        tmp_path, isolated_plugins):
    def run_with(*names: str) -> RunDir:
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        cfg = C.TrainConfig()
        cfg.plugins = list(names)
        (run / "config.yaml").write_text(C.dump_yaml(cfg))
        return RunDir(run)

    shared = tmp_path.parent / f"{tmp_path.name}-shared.py"
    shared.write_text("import pathlib; pathlib.Path('MARKER').touch()\n")
    shared.chmod(0o666)  # anyone may write it: a run may not make mtrl import it
    for names, fragment in [(["/nowhere/gone.py"], "/nowhere/gone.py does not exist"),
                            ([str(shared)], "others may write to it"),
                            (["antigravity"], "a standard-library module is not"),
                            (["parts/local.py"], "must be absolute paths"),
                            (["no_such_mtrl_plugin_xyz"], "no module named"),
                            (["os; rm"], "not a dotted module name")]:
        run = run_with(*names)
        with pytest.raises(ConfigError) as e:
            run.config()
        assert str(run.config_path) in str(e.value) and fragment in str(e.value)
        assert run.config(plugins=False).plugins == names  # reading without importing
    # The run of an absent plug-in fails in the CLI with the same line.
    proc = _mtrl("eval", str(run_with("/nowhere/gone.py").path), cwd=tmp_path)
    _one_line_error(proc, "config.yaml", "/nowhere/gone.py does not exist")


def test_command_line_plugins_are_imported_and_recorded(tmp_path, isolated_plugins,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.py").write_text("IMPORTED = True\n")
    (tmp_path / "b.py").write_text("IMPORTED = True\n")
    a, b = str(tmp_path / "a.py"), str(tmp_path / "b.py")
    argv = ["eval", "run", "--plugin", "a.py"]
    assert plugins.prepare_cli(argv) == argv and plugins.loaded_plugins()[-1] == a
    assert plugins.prepare_cli(["train", "toy-mtsac", "--plugin=a.py", "--plugin", "a.py"]) \
        == ["train", "toy-mtsac", "--plugin=a.py", "--plugin", "a.py", f"--plugins={a}"]
    # Resuming: the run's recorded plug-ins first, then the new ones.
    run = tmp_path / "run"
    run.mkdir()
    cfg = C.TrainConfig()
    cfg.plugins = [b]
    (run / "config.yaml").write_text(C.dump_yaml(cfg))
    assert plugins.prepare_cli(["train", "--resume", str(run), "--plugin", "a.py"])[-1] \
        == f"--plugins={b},{a}"
    # A registration that fails half-way is undone, so a fixed plug-in can load again.
    (tmp_path / "half.py").write_text(
        "import mtrl\nmtrl.register_architecture('half-test', lambda *a: None)\n"
        "raise RuntimeError('broken')\n")
    with pytest.raises(ConfigError, match=r"RuntimeError: broken \(at .*half.py:3\)"):
        plugins.load_plugin("half.py")
    assert "half-test" not in ARCHITECTURES


def test_installed_packages_register_through_entry_points(tmp_path):
    site = tmp_path / "site"
    info = site / "demo_mtrl_parts-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-mtrl-parts\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[mtrl.plugins]\ndemo = demo_mtrl_parts\n")
    (site / "demo_mtrl_parts.py").write_text(
        "import mtrl\nfrom mtrl.optim.combiners import MeanCombiner\n\n"
        "mtrl.register_combiner('ep-mean', lambda cfg: MeanCombiner(cfg.diagnostics_every))\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("from mtrl.registry import COMBINERS\n"
            "print(COMBINERS.get('ep-mean').module, 'mean' in COMBINERS)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.split() == ["demo_mtrl_parts", "True"], out.stderr
    (site / "demo_mtrl_parts.py").write_text("raise RuntimeError('boom')\n")
    _one_line_error(_mtrl("train", "toy-mtsac", cwd=tmp_path, pythonpath=site),
                    "entry point 'demo_mtrl_parts'", "'demo-mtrl-parts'", "RuntimeError: boom",
                    "MTRL_DISABLE_ENTRY_POINTS")


# ----------------------------------------------------------------------------------------------
# The random-loss-weighting example, numerically


def _task_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tasks: int
                 ) -> torch.Tensor:
    """Task-stratified rows (task-major): one mean squared error per task."""
    return ((model(x) - y) ** 2).view(tasks, -1).mean(1)


@pytest.mark.parametrize("diagnostics_every", [0, 1])
def test_rlw_weights_are_a_random_softmax_and_the_gradient_their_weighted_sum(
        diagnostics_every, isolated_plugins):
    from mtrl.optim.combiners import make_combiner

    plugins.load_plugins([str(RLW)])
    assert COMBINERS.get("rlw").module.startswith("mtrl_plugin_rlw_combiner")
    torch.manual_seed(0)
    tasks = 3
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    params = list(model.parameters())
    x, y = torch.randn(tasks * 5, 3), torch.randn(tasks * 5, 2)
    combiner = make_combiner("rlw", C.CombinerConfig(diagnostics_every=diagnostics_every))
    combiner.watch(model)  # per-task gradients from one backward when armed (diagnostics)
    seen = []
    for _ in range(3):
        losses = _task_losses(model, x, y, tasks)
        per_task = [torch.autograd.grad(losses[k], params, retain_graph=True)
                    for k in range(tasks)]
        for p in params:
            p.grad = None
        combiner.backward(losses, params)
        w = combiner.weights
        assert w.shape == (tasks,) and bool((w > 0).all())
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
        for i, p in enumerate(params):
            expected = sum(w[k] * per_task[k][i] for k in range(tasks))
            torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)
        report = combiner.report()
        torch.testing.assert_close(report["weight"], tasks * w)
        assert ("cosine" in report) == (diagnostics_every == 1)
        seen.append(w.clone())
    assert not torch.allclose(seen[0], seen[1]) and not torch.allclose(seen[1], seen[2])
    # Drawn from torch's global generator: a seeded run repeats its weights.
    torch.manual_seed(1)
    combiner.backward(_task_losses(model, x, y, tasks), params)
    first = combiner.weights.clone()
    torch.manual_seed(1)
    combiner.backward(_task_losses(model, x, y, tasks), params)
    torch.testing.assert_close(combiner.weights, first)
