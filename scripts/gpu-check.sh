#!/usr/bin/env bash
# The one-shot GPU check, host side: build everything the GPU run needs with the CUDA features,
# here (no GPU, no CUDA toolkit: scripts/cuda-build.sh's venv and link folder), and pack it into
# gpu-bundle/ (git-ignored) for the device tool to carry:
#
#   scripts/gpu-check.sh                  # build + pack (prints the bundle's size last)
#   then, with a lent GPU (device tool, one call, carry ["gpu-bundle"]):
#   bash scripts/gpu-device.sh            # runs it there, writes $OUT/gpu-check.{log,json}
#
# The bundle: the CUDA builds of reid-prune, the bench and the device tests
# (reid-train/tests/cuda_device.rs, plus generic_path.rs), each xz-compressed (the device tool
# carries 64 MiB in all: the binaries are ~65 MB each, mostly embedded PTX, ~9 MB compressed),
# and a libcurand.so.10 shim for devices without cuRAND (candle opens a cuRAND generator when it
# opens a device; our code makes no random numbers on the GPU: its shim creates the generator
# and refuses every generate call). The device must have the CUDA 13 runtime libraries
# (libcudart.so.13, libcublas(Lt).so.13, libnvrtc.so.13, libcudnn.so.9): a CUDA 13 toolkit or
# PyTorch's cu13x wheels; gpu-device.sh looks for them and says what it found.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FEATURES="cuda,cudnn"
TARGET="${REID_CUDA_TARGET:-$HOME/.cache/reid-prune/target-cuda}"
BUNDLE="$ROOT/gpu-bundle"
start=$(date +%s)

# the toolkit venv, the link folder, reid-prune and reid-eval; then the same environment here
"$ROOT/scripts/cuda-build.sh" "$FEATURES" >/dev/null
# shellcheck source=cuda-env.sh
. "$ROOT/scripts/cuda-env.sh"
cd "$ROOT"

# the bench and the device tests, same target folder and features
CARGO_TARGET_DIR="$TARGET" cargo build --release -p reid-bench --features "$FEATURES" \
  --bin bench >&2
TESTS="$(CARGO_TARGET_DIR="$TARGET" cargo test --release -p reid-train --features "$FEATURES" \
  --test cuda_device --test generic_path --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')"
[ "$(echo "$TESTS" | wc -l)" -eq 2 ] || { echo "gpu-check: expected 2 test binaries, got: $TESTS" >&2; exit 1; }

rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
pack() { # pack NAME FILE
  strip -o "$BUNDLE/$1" "$2"
  xz -6 -T2 "$BUNDLE/$1"
}
pack reid-prune "$TARGET/release/reid-prune"
pack bench "$TARGET/release/bench"
while read -r name exe; do pack "test-$name" "$exe"; done <<< "$TESTS"

# the cuRAND shim: success for create/seed/stream/destroy, an error for anything else
CUDARC="$(cudarc_dir "$FEATURES")"
grep -rhoE '\bfn curand[A-Za-z0-9_]+\(' "$CUDARC/src/curand/sys" | sed -E 's/fn ([A-Za-z0-9_]+).*/\1/' \
  | sort -u > "$BUNDLE/curand.symbols"
[ -s "$BUNDLE/curand.symbols" ] || { echo "gpu-check: no cuRAND functions found in $CUDARC" >&2; exit 1; }
{
  echo 'static int generator;'
  echo 'int curandCreateGenerator(void **g, int kind) { (void)kind; *g = &generator; return 0; }'
  for f in curandSetPseudoRandomGeneratorSeed curandSetStream curandDestroyGenerator curandSetGeneratorOffset; do
    echo "int $f(void) { return 0; }"
  done
  # 999 = CURAND_STATUS_INTERNAL_ERROR: "this shim makes no random numbers"
  grep -vxE 'curand(CreateGenerator|SetPseudoRandomGeneratorSeed|SetStream|DestroyGenerator|SetGeneratorOffset)' \
    "$BUNDLE/curand.symbols" | sed 's/.*/int &(void) { return 999; }/'
} > "$BUNDLE/curand_shim.c"
mkdir -p "$BUNDLE/shim"
# the real library versions its symbols (node "libcurand.so.10"), and the binaries ask for it
echo 'libcurand.so.10 { global: *; };' > "$BUNDLE/curand_shim.map"
gcc -shared -fPIC -O1 -Wl,-soname,libcurand.so.10 -Wl,--version-script="$BUNDLE/curand_shim.map" \
  -o "$BUNDLE/shim/libcurand.so.10" "$BUNDLE/curand_shim.c"
rm "$BUNDLE/curand.symbols"

git -C "$ROOT" rev-parse HEAD > "$BUNDLE/commit"
echo "gpu-check: bundle built in $(( $(date +%s) - start )) s:" >&2
ls -l "$BUNDLE" "$BUNDLE/shim" >&2
du -sh "$BUNDLE"
