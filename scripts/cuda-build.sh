#!/usr/bin/env bash
# Build reid-prune with the CUDA features on a machine without a CUDA toolkit or a GPU.
#
#   scripts/cuda-build.sh [FEATURES]        (default: cuda,cudnn; or: cuda)
#
# 1. installs the CUDA 13 toolkit pieces from PyPI into a venv of their own
#    ($REID_CUDA_VENV, default ~/.cache/reid-prune/cuda-venv): nvcc, runtime, CCCL, CRT, cuBLAS,
#    cuRAND, NVRTC and cuDNN;
# 2. sets what cudarc and candle-kernels read: PATH (nvcc), CUDA_ROOT/CUDA_PATH, CUDA_COMPUTE_CAP
#    (default 90, an H100/H200), CUDARC_CUDA_VERSION (cudarc 0.19.10 knows CUDA up to 13.4; the
#    PyPI nvcc is 13.5: the 13.4 API is what we bind);
# 3. links against a folder of unversioned names for the wheels' libraries (libcublas.so ->
#    libcublas.so.13, …) and a stub libcuda.so.1 generated from the driver functions cudarc binds
#    (the driver library ships with the NVIDIA driver, never in a wheel; at run time the real one
#    is loaded);
# 4. builds into its own target folder ($REID_CUDA_TARGET, default
#    ~/.cache/reid-prune/target-cuda) and prints the path of the built reid-prune as its last line.
# To run the binary on a GPU machine: LD_LIBRARY_PATH must reach libcublas.so.13, libcurand.so.10,
# libnvrtc.so.13, libcudart.so.13 (and libcudnn.so.9): the same wheels, or PyTorch's.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FEATURES="${1:-cuda,cudnn}"
start=$(date +%s)
# shellcheck source=cuda-env.sh
. "$ROOT/scripts/cuda-env.sh"

if ! "$VENV/bin/python" -c 'import nvidia' 2>/dev/null; then
  echo "cuda-build: installing the CUDA toolkit pieces from PyPI into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cuda-crt \
    nvidia-cublas nvidia-curand nvidia-cuda-nvrtc nvidia-cudnn-cu13
  . "$ROOT/scripts/cuda-env.sh"
fi
[ -x "$CU/bin/nvcc" ] || { echo "cuda-build: no nvcc under $CU/bin" >&2; exit 1; }
echo "cuda-build: $(nvcc --version | tail -1), compute capability $CUDA_COMPUTE_CAP, cudarc API $CUDARC_CUDA_VERSION" >&2

# --- the link folder ----------------------------------------------------------------------------
mkdir -p "$LINK"
link() { # link NAME FOLDER: libNAME.so -> the wheel's versioned file
  local f
  f="$(ls "$2"/lib"$1".so.* 2>/dev/null | sort | head -1)"
  [ -n "$f" ] || { echo "cuda-build: lib$1.so.* not found in $2" >&2; exit 1; }
  ln -sf "$f" "$LINK/lib$1.so"
}
for l in cublas cublasLt cudart curand nvrtc; do link "$l" "$CU/lib"; done
if [[ "$FEATURES" == *cudnn* ]]; then link cudnn "$NV/cudnn/lib"; fi

# the driver API stub: every function cudarc's driver bindings name
cd "$ROOT"
CRATE_FEATURES="$(echo "$FEATURES" | tr ',' '\n' | sed 's#.*#reid-prune/&,reid-eval/&#' | paste -sd,)"
CUDARC="$(cudarc_dir "$FEATURES")"
grep -rhoE '\bfn cu[A-Za-z0-9_]+\(' "$CUDARC/src/driver/sys" | sed -E 's/fn ([A-Za-z0-9_]+).*/\1/' \
  | sort -u > "$LINK/libcuda.symbols"
[ -s "$LINK/libcuda.symbols" ] || { echo "cuda-build: no driver functions found under $CUDARC/src/driver/sys" >&2; exit 1; }
sed 's/.*/int &(void) { return 999; }/' "$LINK/libcuda.symbols" > "$LINK/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/libcuda_stub.c"
echo "cuda-build: libcuda stub with $(wc -l < "$LINK/libcuda.symbols") driver functions (soname libcuda.so.1)" >&2

# --- the build ----------------------------------------------------------------------------------
CARGO_TARGET_DIR="$TARGET" cargo build --release -p reid-prune -p reid-eval --features "$CRATE_FEATURES" --bins >&2
BIN="$TARGET/release/reid-prune"
echo "cuda-build: built in $(( $(date +%s) - start )) s; needs: $(ldd "$BIN" | grep -oE 'lib(cuda|cublas|cublasLt|cudart|curand|nvrtc|cudnn)[^ ]*' | sort -u | tr '\n' ' ')" >&2
echo "$BIN"
