#!/usr/bin/env bash
# The GPU check of issue 17, in one command (under 8 minutes on one GPU):
#   1. the device-parametrized tests (tests/test_devices.py: update, replay sampling, PopArt,
#      combiners, A2C/PPO rollouts, checkpoints across devices, graph-captured updates) and
#      the compile tests (tests/test_compile.py), -m "not slow", on CUDA when present;
#   2. benchmarks/train_throughput.py: MT-SAC updates/s eager vs compiled vs graph-captured at
#      MT10 and MT50 shapes, with the projected wall-clock of each preset's budget;
#   3. the figures, printed at the end (and kept in OUT_DIR).
# Without CUDA the CUDA tests skip (each with its reason) and the benchmark runs on the CPU.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default runs/bench/gpu_check)
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-runs/bench/gpu_check}
mkdir -p "$OUT"
start=$(date +%s)

echo "== machine"
"$PY" - <<'EOF' | tee "$OUT/machine.txt"
import os, torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, CUDA: "
      + (f"{torch.cuda.get_device_name(0)} ({torch.version.cuda})" if cuda else "not available"))
EOF

echo "== tests (device-parametrized and compile; -m 'not slow')"
timeout 240 "$PY" -m pytest tests/test_devices.py tests/test_compile.py -m "not slow" -q -rs \
    -p no:cacheprovider 2>&1 | tee "$OUT/tests.txt"
tests_rc=${PIPESTATUS[0]}

echo "== throughput (benchmarks/train_throughput.py)"
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    # 16 cores: MT10 end to end with 8 env worker processes overlapping the GPU update
    bench_args=(--rounds 8 --updates 20 --warmup 5 --end-to-end mt10-mtsac --workers 8
                --e2e-iterations 300)
    limit=330
else  # CPU: ~0.1 s per update and tens of seconds per compile; fewer, shorter rounds
    bench_args=(--rounds 3 --updates 3 --warmup 3 --fill 1000 --threads 1)
    limit=900
fi
# MT10 first: a time-limited run keeps the presets it finished in the JSON.
timeout "$limit" "$PY" benchmarks/train_throughput.py --json "$OUT/train_throughput.json" \
    "${bench_args[@]}" > "$OUT/train_throughput.txt" 2>&1
bench_rc=$?
grep -v '^[ {}\[\]"]' "$OUT/train_throughput.txt" | grep -v '^$' | head -20

echo "== figures"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
tests = (out / "tests.txt").read_text().strip().splitlines()
print("tests:", tests[-1] if tests else "no output")
path = out / "train_throughput.json"
if not path.exists():
    print("throughput: no result (see train_throughput.txt)")
    sys.exit()
data = json.loads(path.read_text())
print(f"device {data['device']}, torch {data['torch']}")
if "overlap" in data:
    ov = data["overlap"]
    print(f"overlap (toy env 5 ms, update 5 ms): pipelined {ov['pipelined_ratio']:.2f} "
          f"(goal <= 1.2), sequential {ov['sequential_ratio']:.2f}")
for p in data["presets"]:
    ups, ratio = p["updates_per_sec"], p["speedup_vs_eager"]
    cells = "  ".join(f"{n} {ups[n]:.1f}/s x{ratio[n]:.2f}" for n in ups)
    proj = p["projection"]
    print(f"{p['preset']}: {cells}")
    print(f"  {p['preset']} full budget ({proj['total_steps']:,} env steps, "
          f"{proj['updates']:,} updates) at {proj['updates_per_sec']:.1f} updates/s "
          f"({p['fastest']}): {proj['hours']:.1f} h of update time (env stepping not included)")
    print(f"  warm-up incl. compile: " + ", ".join(f"{n} {s:.0f}s"
                                                   for n, s in p["warmup_seconds"].items()))
    if "end_to_end" in p:
        e, pe = p["end_to_end"], p["projection_end_to_end"]
        print(f"  end to end ({e['workers']} env workers): sequential "
              f"{e['sequential_env_steps_per_s']:.0f} env steps/s, pipelined "
              f"{e['pipelined_env_steps_per_s']:.0f} (x{e['speedup']:.2f}); full budget "
              f"{pe['hours']:.1f} h ({pe['collector']} collector, evaluation not included)")
EOF
echo "tests exit code: $tests_rc; benchmark exit code: $bench_rc; $(( $(date +%s) - start ))s"
echo "outputs in $OUT"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
