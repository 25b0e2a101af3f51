#!/usr/bin/env python3
"""Exported ONNX models in ONNX Runtime: features equal ours, and the pruned model's speed-up.

    python3 bench/onnx_check.py [--bin target/release] [--work /tmp/onnx-check] [--iters 10]

Makes its own venv (onnxruntime, numpy, pillow; `$REID_ONNX_VENV`, default
~/.cache/reid-prune/onnx-venv) and re-runs itself there. Then, with the release binaries:
1. the golden torchvision ResNet-50 (../shared/golden) and its half-FLOPs prune
   (`reid-prune prune --criterion l1 --level 0.5 [--round-to N]`, the paper's C1) are exported with
   `reid-prune export --dynamic-batch`;
2. both run in ONNX Runtime on the golden PNGs; their features are compared with
   `reid-eval extract` on the same images (max |diff| relative to the feature scale, limit 1e-4);
3. both are timed at 256x128, batch 1 and 32, in --iters alternating pairs after a warm-up; the
   speed-up is the median of the per-pair ratios (with their range); `--json FILE` also writes
   the numbers;
4. when a Python with torch is at hand (`$REID_TORCH_PYTHON`, else the venv
   ~/.cache/reid-prune/torch-venv if it exists), the pruned checkpoint is rebuilt as a PyTorch
   module by tools/to_torchvision.py (strict load) and its features compared with ours too.

    python3 bench/onnx_check.py --runs runs/default [--iters 10]

instead measures every run folder under a grid's output (each `model.safetensors` beside a
`metrics.json`): exported at the run's input size (its config.toml), features checked against
`reid-eval extract` on generated images of that size, timed at batch 1 and 32 (median of
--iters), written atomically to the folder's `deploy.json`; `reid-report` then shows ONNX
Runtime's latency and speed-up beside ours.
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
    ap.add_argument("--round-to", type=int, default=1, help="prune --round-to (kept widths in multiples)")
    ap.add_argument("--json")
    ap.add_argument("--runs", help="measure every run folder under this grid output instead")
    a = ap.parse_args()
    bin_ = Path(a.bin)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.runs:
        sys.exit(measure_runs(Path(a.runs), bin_, work, a.iters))
    weights = GOLDEN / "resnet50.safetensors"
    pruned_dir = work / f"pruned-round{a.round_to}"
    run([bin_ / "reid-prune", "prune", "--checkpoint", weights, "--arch", "resnet50", "--criterion", "l1",
         "--level", "0.5", "--round-to", a.round_to, "--out", pruned_dir, "--overwrite"])
    models = {"unpruned": weights, "pruned": pruned_dir / "model.safetensors"}

    # the golden PNGs, exactly 256x128: no resize, the same pixels in both
    files = sorted((GOLDEN / "images").glob("*.png"))
    imgs = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) for f in files])
    x = (imgs / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    results = {"onnxruntime": ort.__version__, "threads": os.cpu_count(), "round_to": a.round_to, "models": {}}
    sessions = {}
    for name, ck in models.items():
        onnx = work / (f"{name}.onnx" if name == "unpruned" else f"pruned-round{a.round_to}.onnx")
        run([bin_ / "reid-prune", "export", "--checkpoint", ck, "--out", onnx, "--feature", "pool",
             "--dynamic-batch", "--fold-bn"])
        feats = work / f"{name}-features.safetensors"
        run([bin_ / "reid-eval", "extract", "--weights", ck, "--images", GOLDEN / "images", "--out", feats,
             "--feature", "pool"])
        ours = read_safetensors_f32(feats, "features")
        sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x})[0]
        rel = float(np.abs(got - ours).max() / max(np.abs(ours).max(), 1e-6))
        sessions[name] = sess
        results["models"][name] = {"max_rel_diff": rel, "onnx_mb": onnx.stat().st_size / 1e6}
        print(f"{name:9} features: max rel diff vs reid-eval {rel:.2e}")
    # paired, alternating runs: each pair times both models back to back, so that a slow moment
    # of the machine slows both; the speed-up is the median of the per-pair ratios
    for batch in (1, 32):
        xb = np.random.default_rng(0).standard_normal((batch, 3, 256, 128), dtype=np.float32)
        for sess in sessions.values():
            sess.run(None, {"input": xb})
        times = {name: [] for name in sessions}
        for _ in range(a.iters):
            for name, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, {"input": xb})
                times[name].append(time.perf_counter() - t)
        ratios = sorted(u / p for u, p in zip(times["unpruned"], times["pruned"]))
        for name in sessions:
            results["models"][name][f"batch{batch}_ms"] = 1000 * statistics.median(times[name])
        results[f"speedup_batch{batch}"] = statistics.median(ratios)
        results[f"speedup_batch{batch}_range"] = [ratios[0], ratios[-1]]
        print(f"batch {batch:2}: unpruned {results['models']['unpruned'][f'batch{batch}_ms']:8.2f} ms, "
              f"pruned {results['models']['pruned'][f'batch{batch}_ms']:8.2f} ms (medians); "
              f"speed-up {statistics.median(ratios):.2f}x (pairs {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"ONNX Runtime {ort.__version__}, prune --round-to {a.round_to}: pruned speed-up "
          f"{results['speedup_batch1']:.2f}x at batch 1, {results['speedup_batch32']:.2f}x at batch 32")
    ok = all(m["max_rel_diff"] <= 1e-4 for m in results["models"].values())
    print("features equal ours (<= 1e-4 relative):", "yes" if ok else "NO")
    torch_py = torch_python()
    if torch_py:
        r = subprocess.run([torch_py, ROOT / "tools" / "to_torchvision.py", models["pruned"],
                            "--check-features", work / "pruned-features.safetensors",
                            "--images", GOLDEN / "images"], capture_output=True, text=True)
        print("PyTorch (tools/to_torchvision.py):", (r.stdout + r.stderr).strip().splitlines()[-1])
        results["torch_check_passed"] = r.returncode == 0
        ok = ok and r.returncode == 0
    else:
        print("PyTorch check skipped: no Python with torch ($REID_TORCH_PYTHON)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    sys.exit(0 if ok else 1)


def torch_python():
    """A Python that imports torch: $REID_TORCH_PYTHON, else the torch venv if it exists."""
    cands = [os.environ.get("REID_TORCH_PYTHON"),
             str(Path.home() / ".cache/reid-prune/torch-venv/bin/python")]
    for c in cands:
        if c and Path(c).exists():
            if subprocess.run([c, "-c", "import torch, safetensors"], capture_output=True).returncode == 0:
                return c
    return None


def write_atomic(path, text):
    """A unique temp file in the same folder, fsync, rename: never half a file."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_input(run_dir):
    """The run's input size (HxW) from its config.toml."""
    import tomllib

    cfg = tomllib.loads((run_dir / "config.toml").read_text())
    h, w = (int(v) for v in str(cfg["input"]).lower().split("x"))
    return h, w


def measure_runs(root, bin_, work, iters):
    """ONNX Runtime latency of every run folder's model, into its deploy.json."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    dirs = sorted(p.parent for p in root.rglob("metrics.json")
                  if "steps" not in p.relative_to(root).parts and (p.parent / "model.safetensors").is_file())
    if not dirs:
        return f"{root}: no run folder (metrics.json beside model.safetensors) below it"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = os.cpu_count()
    failed = 0
    images = {}
    for d in dirs:
        h, w = run_input(d)
        if (h, w) not in images:
            # the same pixels in both: PNGs of exactly the input size, no resize anywhere
            folder = work / f"images-{h}x{w}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(0)
            pix = rng.integers(0, 256, (8, h, w, 3), dtype=np.uint8)
            for i, p in enumerate(pix):
                Image.fromarray(p).save(folder / f"{i}.png")
            x = (pix.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
            images[(h, w)] = (folder, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        folder, x = images[(h, w)]
        tag = str(d.relative_to(root)).replace("/", "_")
        onnx, feats = work / f"{tag}.onnx", work / f"{tag}-features.safetensors"
        ck = d / "model.safetensors"
        run([bin_ / "reid-prune", "export", "--checkpoint", ck, "--out", onnx, "--feature", "pool",
             "--dynamic-batch", "--fold-bn", "--input", f"{h}x{w}"])
        run([bin_ / "reid-eval", "extract", "--weights", ck, "--images", folder, "--out", feats,
             "--feature", "pool", "--input", f"{h}x{w}"])
        ours = read_safetensors_f32(feats, "features")
        sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x})[0]
        rel = float(np.abs(got - ours).max() / max(np.abs(ours).max(), 1e-6))
        lat = {}
        for batch in (1, 32):
            xb = np.random.default_rng(1).standard_normal((batch, 3, h, w), dtype=np.float32)
            sess.run(None, {"input": xb})
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                sess.run(None, {"input": xb})
                times.append(time.perf_counter() - t)
            lat[f"batch{batch}"] = 1000 * statistics.median(times)
        entry = {"runtime": f"onnxruntime {ort.__version__}", "model_sha256": sha256(ck),
                 "input": f"{h}x{w}", "threads": threads,
                 "latency_ms": lat, "max_rel_diff": rel}
        path = d / "deploy.json"
        deploy = json.loads(path.read_text()) if path.is_file() else {}
        deploy["onnxruntime-cpu"] = entry
        write_atomic(path, json.dumps(deploy, indent=2))
        ok = rel <= 1e-4
        failed += not ok
        print(f"{str(d.relative_to(root)):28} b1 {lat['batch1']:8.3f} ms  b32 {lat['batch32']:8.3f} ms  "
              f"features max rel diff {rel:.1e}{'' if ok else '  > 1e-4!'}")
        onnx.unlink()
    print(f"{len(dirs)} run folders measured in ONNX Runtime {ort.__version__}; deploy.json written "
          f"in each; {failed} with features beyond 1e-4")
    return 1 if failed else 0


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
