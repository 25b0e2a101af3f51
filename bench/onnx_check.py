#!/usr/bin/env python3
"""Exported ONNX models in ONNX Runtime: features equal ours, and the pruned model's speed-up.

    python3 bench/onnx_check.py [--bin target/release] [--work /tmp/onnx-check] [--iters 10]

Makes its own venv (onnxruntime, numpy, pillow; `$REID_ONNX_VENV`, default
~/.cache/reid-prune/onnx-venv) and re-runs itself there. Then, with the release binaries:
1. the golden torchvision ResNet-50 (../shared/golden) and its half-FLOPs prune
   (`reid-prune prune --criterion l1 --level 0.5`, the paper's C1) are exported with
   `reid-prune export --dynamic-batch`;
2. both run in ONNX Runtime on the golden PNGs; their features are compared with
   `reid-eval extract` on the same images (max |diff| relative to the feature scale, limit 1e-4);
3. both are timed at 256x128, batch 1 and 32 (median of --iters, after a warm-up), and the
   speed-up of the pruned model printed; `--json FILE` also writes the numbers.
Not part of CI (it downloads onnxruntime); its numbers go into BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT.parent / "shared" / "golden" / "resnet"
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def ensure_venv():
    venv = Path(os.environ.get("REID_ONNX_VENV", Path.home() / ".cache/reid-prune/onnx-venv"))
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "onnxruntime", "numpy", "pillow"], check=True)
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return r


def main():
    ensure_venv()
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release"))
    ap.add_argument("--work", default="/tmp/reid-onnx-check")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    bin_ = Path(a.bin)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    weights = GOLDEN / "resnet50.safetensors"
    pruned_dir = work / "pruned"
    run([bin_ / "reid-prune", "prune", "--checkpoint", weights, "--arch", "resnet50", "--criterion", "l1",
         "--level", "0.5", "--out", pruned_dir, "--overwrite"])
    models = {"unpruned": weights, "pruned": pruned_dir / "model.safetensors"}

    # the golden PNGs, exactly 256x128: no resize, the same pixels in both
    files = sorted((GOLDEN / "images").glob("*.png"))
    imgs = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) for f in files])
    x = (imgs / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    results = {"onnxruntime": ort.__version__, "threads": os.cpu_count(), "models": {}}
    for name, ck in models.items():
        onnx = work / f"{name}.onnx"
        run([bin_ / "reid-prune", "export", "--checkpoint", ck, "--out", onnx, "--feature", "pool",
             "--dynamic-batch", "--fold-bn"])
        feats = work / f"{name}-features.safetensors"
        run([bin_ / "reid-eval", "extract", "--weights", ck, "--images", GOLDEN / "images", "--out", feats,
             "--feature", "pool"])
        ours = read_safetensors_f32(feats, "features")
        sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x})[0]
        rel = float(np.abs(got - ours).max() / max(np.abs(ours).max(), 1e-6))
        times = {}
        for batch in (1, 32):
            xb = np.random.default_rng(0).standard_normal((batch, 3, 256, 128), dtype=np.float32)
            sess.run(None, {"input": xb})
            ts = []
            for _ in range(a.iters):
                t = time.perf_counter()
                sess.run(None, {"input": xb})
                ts.append(time.perf_counter() - t)
            times[f"batch{batch}_ms"] = 1000 * statistics.median(ts)
        results["models"][name] = {"max_rel_diff": rel, **times, "onnx_mb": onnx.stat().st_size / 1e6}
        print(f"{name:9} max rel diff vs reid-eval {rel:.2e}  batch 1 {times['batch1_ms']:8.2f} ms  "
              f"batch 32 {times['batch32_ms']:9.2f} ms")
    u, p = results["models"]["unpruned"], results["models"]["pruned"]
    for b in ("batch1_ms", "batch32_ms"):
        results[f"speedup_{b[:-3]}"] = u[b] / p[b]
    print(f"ONNX Runtime {ort.__version__}: pruned speed-up {results['speedup_batch1']:.2f}x at batch 1, "
          f"{results['speedup_batch32']:.2f}x at batch 32")
    ok = all(m["max_rel_diff"] <= 1e-4 for m in results["models"].values())
    print("features equal ours (<= 1e-4 relative):", "yes" if ok else "NO")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    sys.exit(0 if ok else 1)


def read_safetensors_f32(path, name):
    """One f32 tensor of a safetensors file, without the safetensors package."""
    import numpy as np

    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    info = header[name]
    assert info["dtype"] == "F32", info
    start, end = info["data_offsets"]
    return np.frombuffer(raw[8 + n + start:8 + n + end], dtype=np.float32).reshape(info["shape"])


if __name__ == "__main__":
    main()
