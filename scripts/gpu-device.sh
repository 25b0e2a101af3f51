#!/usr/bin/env bash
# The one-shot GPU check, device side: run what scripts/gpu-check.sh packed into gpu-bundle/, on
# the lent GPU, in one go (about 8 minutes at most; every stage has its own time limit so that a
# hang in one still leaves the others' results):
#
#   device tool: command "bash scripts/gpu-device.sh", carry ["gpu-bundle"], timeout_s 600
#
# 1. CUDA vs CPU numerics (reid-train/tests/cuda_device.rs, ignored elsewhere): the full
#    ResNet-50's features at 256×128 (trainable and BN-folded) and three re-ID training steps;
# 2. train and inference img/s of our CUDA build beside PyTorch's on the same GPU (bench
#    --train-case/--infer-batch and bench/pytorch_reference.py, same shapes);
# 3. the --quick grid on cuda:0: training, every scenario's prune, evaluation, the report.
# Writes $OUT/gpu-check.log (everything) and $OUT/gpu-check.json (one line a measurement);
# exits non-zero if a stage failed. Needs the CUDA 13 runtime libraries (a CUDA 13 toolkit or
# PyTorch's cu13x wheels) and, for stage 2, PyTorch with CUDA.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$ROOT/gpu-bundle"
OUT="${OUT:-$ROOT/gpu-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
JSON="$OUT/gpu-check.json"
: > "$JSON"
exec > >(tee -a "$LOG") 2>&1
say() { echo "== $(date +%T) $*"; }
failed=()

[ -d "$BUNDLE" ] || { echo "no $BUNDLE: run scripts/gpu-check.sh here first and carry gpu-bundle"; exit 2; }
say "bundle of commit $(cat "$BUNDLE/commit" 2>/dev/null)"
BIN="$(mktemp -d)"
for f in "$BUNDLE"/*.xz; do
  n="$(basename "$f" .xz)"
  xz -dc "$f" > "$BIN/$n" && chmod +x "$BIN/$n"
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

# --- the CUDA libraries: a toolkit's, or those of PyTorch's wheels ------------------------------
PY="${REID_TORCH_PYTHON:-python3}"
dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && dirs+=("$d"); done
while read -r d; do [ -n "$d" ] && dirs+=("$d"); done < <("$PY" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    for p in nvidia.__path__:
        for lib in glob.glob(os.path.join(p, "*", "lib")):
            print(lib)
except ImportError:
    pass
EOF
)
LIBS=""
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcudnn.so.9 libcurand.so.10; do
  hit=""
  for d in "${dirs[@]}"; do [ -e "$d/$l" ] && { hit="$d"; break; }; done
  if [ -z "$hit" ] && ldconfig -p 2>/dev/null | grep -q "$l"; then hit="(system)"; fi
  echo "library $l: ${hit:-not found}"
  if [ -n "$hit" ] && [ "$hit" != "(system)" ] && [[ ":$LIBS:" != *":$hit:"* ]]; then LIBS="$LIBS:$hit"; fi
done
# the cuRAND shim goes last: a real libcurand found above wins
export LD_LIBRARY_PATH="${LIBS#:}:$BUNDLE/shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing="$(ldd "$BIN/reid-prune" | grep 'not found' || true)"
if [ -n "$missing" ]; then
  echo "missing libraries (the build links CUDA 13's; install its runtime or a cu13x PyTorch):"
  echo "$missing"
  exit 3
fi

stage() { # stage NAME SECONDS CMD...: run with a time limit, record failure
  local name="$1" secs="$2"; shift 2
  say "$name"
  timeout "$secs" "$@" || { echo "stage $name FAILED (exit $?)"; failed+=("$name"); }
}

# --- 1. numerics --------------------------------------------------------------------------------
stage "CUDA vs CPU numerics" 240 "$BIN/test-cuda_device" --ignored --nocapture --test-threads 1

# --- 2. speed beside PyTorch ----------------------------------------------------------------------
bench_pair() { # bench_pair ARGS...: ours then PyTorch, JSON lines into $JSON
  local ours torch
  ours="$(timeout 120 "$BIN/bench" "$@" --device cuda:0 --iters 10 --json | tail -1)" \
    && echo "{\"who\": \"reid-prune\", \"m\": $ours}" | tee -a "$JSON" \
    || { echo "bench $* FAILED"; failed+=("bench $*"); }
  torch="$(timeout 120 "$PY" "$ROOT/bench/pytorch_reference.py" "$@" --device cuda --iters 10 --json | tail -1)" \
    && echo "{\"who\": \"pytorch\", \"m\": $torch}" | tee -a "$JSON" \
    || echo "pytorch $* failed (no CUDA PyTorch?)"
}
say "speed beside PyTorch"
for c in r18-256x128 r50-256x128 r50q-64x32; do bench_pair --train-case "$c"; done
for b in 1 32; do bench_pair --infer-batch "$b"; done

# --- 3. the quick grid on the GPU -------------------------------------------------------------------
stage "quick grid on cuda:0" 240 "$BIN/reid-prune" --quick --device cuda:0 --out "$OUT/quick"
[ -f "$OUT/quick/summary.txt" ] && cat "$OUT/quick/summary.txt"

say "done; failed stages: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
