#!/usr/bin/env python3
"""Two builds of our bench binary against each other: fresh-process pairs in alternating order.

    python3 bench/binary_pairs.py OLD_BENCH NEW_BENCH [--pairs 5] [--case "--train-case r50q-64x32"]...

What a change that should not move speed is checked with (issue #36: "paired speed ratios against
the binary before"). Build the old one in its own worktree and target folder, e.g.
`git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p reid-bench`.
Prints each pair and, per case, the median and range of new / old.
"""
import argparse
import json
import shlex
import statistics
import subprocess

DEFAULT_CASES = ["--train-case r18-128x64", "--train-case r50q-64x32", "--infer-batch 32"]


def img_s(binary, case, iters):
    out = subprocess.run([binary, *shlex.split(case), "--iters", str(iters), "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["img_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--case", action="append", help="bench arguments of one case (repeatable)")
    args = ap.parse_args()
    for case in args.case or DEFAULT_CASES:
        ratios = []
        for i in range(args.pairs):
            order = [("old", args.old), ("new", args.new)]
            if i % 2:
                order.reverse()
            r = {name: img_s(b, case, args.iters) for name, b in order}
            ratios.append(r["new"] / r["old"])
            print(f"{case} pair {i}: old {r['old']:.1f}, new {r['new']:.1f} img/s, {ratios[-1]:.3f}",
                  flush=True)
        print(f"{case}: new/old median {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}; {len(ratios)} pairs)", flush=True)


if __name__ == "__main__":
    main()
