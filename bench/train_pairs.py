#!/usr/bin/env python3
"""Paired training-speed ratios against PyTorch, on this machine, in one command:

    cargo build --release -p reid-bench --bin bench
    python3 bench/train_pairs.py [--pairs 5] [--iters 5] [--cases r18-128x64,r50q-64x32] [--json]

For each case, runs `bench --train-case C` and `pytorch_reference.py --train-case C` back to back
`--pairs` times (which goes first alternates), each in a fresh process, and prints both img/s and
the per-pair ratio ours/PyTorch: median and range, and each side's peak resident memory. Pairing is what makes the ratio meaningful on a
machine whose speed drifts by 10-20 % within minutes. Cases: r18-128x64 (ResNet-18 CE/SGD step),
r50q-64x32 (the default run's quarter-width ResNet-50 re-ID step), r18-256x128 and r50-256x128
(full re-ID steps; minutes each on 2 cores).

PyTorch comes from $REID_TORCH_PYTHON, else ~/.cache/reid-prune/torch-venv, else python3.
Not part of CI: the numbers go into BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ["r18-128x64", "r50q-64x32", "r18-256x128", "r50-256x128"]


def torch_python():
    if os.environ.get("REID_TORCH_PYTHON"):
        return os.environ["REID_TORCH_PYTHON"]
    venv = Path.home() / ".cache/reid-prune/torch-venv/bin/python"
    return str(venv) if venv.exists() else "python3"


def run_json(cmd):
    """Run one timing process: its img/s and its peak resident memory in MB (wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{stderr.strip()}")
    try:
        return json.loads(stdout.strip().splitlines()[-1])["img_s"], usage.ru_maxrss / 1024
    except (ValueError, KeyError, IndexError):
        sys.exit(f"{' '.join(cmd)}: expected a JSON line with img_s, got:\n{stdout}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5, help="timed steps per process (median)")
    ap.add_argument("--cases", default="r18-128x64,r50q-64x32")
    ap.add_argument("--bench", default=str(ROOT / "target/release/bench"),
                    help="the Rust bench binary (cargo build --release -p reid-bench)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            sys.exit(f"--cases: unknown case {c!r}; expected some of {', '.join(CASES)}")
    if args.pairs < 1:
        sys.exit("--pairs: expected at least 1")
    if not Path(args.bench).is_file():
        sys.exit(f"--bench: {args.bench} not found; build it with "
                 "`cargo build --release -p reid-bench --bin bench`")
    py = torch_python()
    results = {}
    for case in cases:
        ours_cmd = [args.bench, "--train-case", case, "--iters", str(args.iters), "--json"]
        torch_cmd = [py, str(ROOT / "bench/pytorch_reference.py"), "--train-case", case,
                     "--iters", str(args.iters), "--json"]
        ours, theirs, ratios, ours_mb, theirs_mb = [], [], [], [], []
        for i in range(args.pairs):
            if i % 2 == 0:
                (a, am), (b, bm) = run_json(ours_cmd), run_json(torch_cmd)
            else:
                (b, bm), (a, am) = run_json(torch_cmd), run_json(ours_cmd)
            ours_mb.append(am)
            theirs_mb.append(bm)
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
            if not args.json:
                print(f"  {case} pair {i + 1}: ours {a:.2f} img/s, PyTorch {b:.2f} img/s, "
                      f"ratio {a / b:.3f}", file=sys.stderr)
        results[case] = {
            "ours_img_s": ours, "pytorch_img_s": theirs, "ratios": ratios,
            "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
            "max_ratio": max(ratios), "ours_peak_mb": max(ours_mb),
            "pytorch_peak_mb": max(theirs_mb),
        }
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'case':<14} {'ours img/s':>14} {'PyTorch img/s':>15} {'ratio median':>13} {'range':>13}"
          f" {'peak MB ours / PyTorch':>24}")
    for case, r in results.items():
        o, t = r["ours_img_s"], r["pytorch_img_s"]
        print(f"{case:<14} {min(o):6.1f}-{max(o):<7.1f} {min(t):6.1f}-{max(t):<8.1f} "
              f"{r['median_ratio']:12.3f}x {r['min_ratio']:.3f}-{r['max_ratio']:.3f}x"
              f"  {r['ours_peak_mb']:7.0f} / {r['pytorch_peak_mb']:<7.0f}  ({len(r['ratios'])} pairs)")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(0)
