#!/usr/bin/env python3
"""Peak resident memory of PyTorch for the training steps of `reid-prune --bin fullsize`, so the
two can be compared (BENCHMARKS.md). One task per process, because the peak (ru_maxrss) is a
process-wide maximum. Not part of CI.

    pip install torch torchvision   # CPU use of the default wheel is enough
    python3 bench/pytorch_memory.py --task reid [--batch 16] [--steps 3] [--threads 2]

Steps: full-width ResNet-50 (last stride 1, BNNeck-free head: 2048 -> ids), 256x128, Adam
(weight decay 5e-4); `reid` = label-smoothed CE + batch-hard triplet on P x K = batch/4 x 4,
`classify` = label-smoothed CE. Prints RSS before the first step, the peak, and their difference.
"""
import argparse
import json
import resource


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["reid", "classify"], default="reid")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ids", type=int, default=12)
    args = ap.parse_args()
    try:
        import torch
        import torchvision
    except ImportError:
        raise SystemExit("PyTorch and torchvision are not installed: pip install torch torchvision")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    blk = model.layer4[0]
    blk.conv2.stride = (1, 1)
    blk.downsample[0].stride = (1, 1)
    model.fc = torch.nn.Linear(2048, args.ids, bias=False)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, 256, 128)
    pids = (torch.arange(args.batch) // 4) % args.ids
    feats = {}
    model.avgpool.register_forward_hook(lambda m, i, o: feats.__setitem__("f", o.flatten(1)))

    def step():
        opt.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, pids, label_smoothing=0.1)
        if args.task == "reid":
            f = feats["f"]
            d = torch.cdist(f, f)
            same = pids[:, None] == pids[None, :]
            ap_ = (d * same).max(1).values
            an = (d + same * (d.max() + 1)).min(1).values
            loss = loss + torch.relu(ap_ - an + 0.3).mean()
        loss.backward()
        opt.step()

    before = rss_mb()
    for _ in range(args.steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({
        "task": args.task, "batch": args.batch, "steps": args.steps, "torch": torch.__version__,
        "rss_before_mb": round(before, 1), "peak_mb": round(peak, 1),
        "step_peak_over_start_mb": round(peak - before, 1),
    }))


if __name__ == "__main__":
    main()
