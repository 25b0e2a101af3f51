# Sourced by cuda-build.sh and gpu-check.sh: where the PyPI CUDA toolkit and the CUDA build
# live, and the environment cudarc and candle-kernels read. Before the venv is installed only
# VENV, TARGET and LINK are set; after, everything.
VENV="${REID_CUDA_VENV:-$HOME/.cache/reid-prune/cuda-venv}"
TARGET="${REID_CUDA_TARGET:-$HOME/.cache/reid-prune/target-cuda}"
LINK="$TARGET/cuda-link"

if "$VENV/bin/python" -c 'import nvidia' 2>/dev/null; then
  NV="$("$VENV/bin/python" -c 'import nvidia; print(list(nvidia.__path__)[0])')"
  CU="$NV/cu13"
  export PATH="$CU/bin:$PATH"
  export CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_HOME="$CU" CUDA_TOOLKIT_ROOT_DIR="$CU"
  # 90: H100/H200
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  # cudarc 0.19.10 binds CUDA up to 13.4; PyPI's nvcc is 13.5
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13040}"
  # unversioned library names and the libcuda stub (made by cuda-build.sh)
  export LIBRARY_PATH="$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi

# cudarc_dir FEATURES: the source folder of the cudarc crate the CUDA build uses
cudarc_dir() {
  local features
  features="$(echo "$1" | tr ',' '\n' | sed 's#.*#reid-prune/&,reid-eval/&#' | paste -sd,)"
  cargo fetch -q
  cargo metadata --format-version 1 --features "$features" \
    | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))'
}
