#!/usr/bin/env python3
"""Cross-check `reid-eval score --rerank` against torchreid's k-reciprocal re-ranking (not in CI).

    pip install torch torchreid safetensors numpy scipy opencv-python-headless gdown yacs tb-nightly
    python3 bench/rerank_reference.py --out /tmp/rr.safetensors
    cargo run --release -p reid-eval -- score --distmat /tmp/rr.safetensors --rerank --json

Writes random clustered query/gallery features' squared-Euclidean distances (distmat,
distmat_qq, distmat_gg), labels and torchreid's re-ranked matrix (`reranked`; k1 20, k2 6,
lambda 0.3), and prints torchreid's metrics of it in the same JSON shape as
`reid-eval score --json`. reid-eval/tests/data/rerank_torchreid.safetensors was made with
`--queries 40 --gallery 160 --dim 32 --seed 7` (torchreid 0.2.5, numpy 2).
"""
import argparse
import json

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ids", type=int, default=40)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--gallery", type=int, default=300)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import importlib.util
    import torchreid
    from safetensors.numpy import save_file

    base = torchreid.__path__[0] + "/reid/"
    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, base + path)
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        return m
    rerank = load("rerank", "utils/rerank.py").re_ranking
    rank = load("rank", "metrics/rank.py")

    rng = np.random.default_rng(a.seed)
    centres = rng.normal(size=(a.ids, a.dim)) * 1.0
    def draw(n):
        pids = rng.integers(0, a.ids, n)
        cams = rng.integers(1, 7, n)
        feats = centres[pids] + rng.normal(size=(n, a.dim)) * 1.2
        return feats.astype(np.float32), pids.astype(np.int64), cams.astype(np.int64)
    qf, qp, qc = draw(a.queries)
    gf, gp, gc = draw(a.gallery)
    def sqdist(x, y):
        d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
        return np.maximum(d, 0).astype(np.float32)
    qg, qq, gg = sqdist(qf, gf), sqdist(qf, qf), sqdist(gf, gf)
    rr = rerank(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    save_file({"distmat": qg, "distmat_qq": qq, "distmat_gg": gg, "reranked": np.ascontiguousarray(rr, dtype=np.float32),
               "q_pids": qp, "g_pids": gp, "q_camids": qc, "g_camids": gc}, a.out)
    cmc, mAP = rank.eval_market1501(rr, qp, gp, qc, gc, 50)
    print(json.dumps({"mAP": float(mAP), "cmc": [float(c) for c in cmc]}))


if __name__ == "__main__":
    main()
