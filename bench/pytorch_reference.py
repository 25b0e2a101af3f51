#!/usr/bin/env python3
"""Time the shapes of `cargo run --release -p reid-bench --bin bench` with PyTorch, on the same
machine, so the candle/PyTorch ratio can be measured in one sitting. Not part of CI.

    pip install torch torchvision   # CPU build is enough
    python3 bench/pytorch_reference.py [--iters 3] [--threads 2] [--json]

Prints img/s for: a ResNet-18 training step (32x3x128x64, 751 classes, SGD), ResNet-50 inference at
256x128 batch 1 and 32 (NCHW and channels_last), and a half-width ResNet-50 (every bottleneck's
conv1/conv2 at half width = torchvision ResNet(Bottleneck, [3,4,6,3], width_per_group=32)).
"""
import argparse
import json
import statistics
import time


DEVICE = "cpu"


def sync():
    if DEVICE != "cpu":
        import torch
        torch.cuda.synchronize()


def median_secs(fn, iters):
    fn()
    sync()
    ts = []
    for _ in range(max(1, iters)):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


TRAIN_CASES = ["r18-128x64", "r50q-64x32", "r18-256x128", "r50-256x128"]


def scaled_resnet(depth, width, num_classes):
    """torchvision's ResNet-18/50 with every width scaled as `ArchSpec::resnet_with` scales it
    (round(w * width), at least 1: stem, each stage's base and output width)."""
    import torch.nn as nn
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    block, layers = (BasicBlock, [2, 2, 2, 2]) if depth == 18 else (Bottleneck, [3, 4, 6, 3])
    m = ResNet(block, layers, num_classes=num_classes)
    if width == 1.0:
        return m
    s = lambda w: max(1, round(w * width))
    stem = s(64)
    m.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(stem)
    inplanes = stem
    for i, n in enumerate(layers):
        planes, out = s(64 << i), s((64 << i) * block.expansion)
        assert out == planes * block.expansion, "width does not keep the expansion exact"
        blocks = []
        for b in range(n):
            stride = 2 if (b == 0 and i > 0) else 1
            down = None
            if b == 0 and (stride != 1 or inplanes != out):
                down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            blocks.append(block(inplanes, planes, stride, down))
            inplanes = out
        setattr(m, f"layer{i + 1}", nn.Sequential(*blocks))
    m.fc = nn.Linear(inplanes, num_classes)
    return m


def train_case_img_s(case, iters):
    """img/s of one training step shape (the Rust bench's --train-case of the same name)."""
    import torch
    if case == "r18-128x64":
        r18 = scaled_resnet(18, 1.0, 751).to(DEVICE)
        r18.train()
        opt = torch.optim.SGD(r18.parameters(), lr=0.01)
        x = torch.randn(32, 3, 128, 64).to(DEVICE)
        y = torch.randint(0, 751, (32,)).to(DEVICE)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(r18(x), y).backward()
            opt.step()
        return 32 / median_secs(step, iters)
    depth, width, (h, w), classes = {
        "r50q-64x32": (50, 0.25, (64, 32), 100),
        "r18-256x128": (18, 1.0, (256, 128), 751),
        "r50-256x128": (50, 1.0, (256, 128), 751),
    }[case]
    return reid_step_img_s(scaled_resnet(depth, width, classes), (h, w), classes, iters)


def reid_step_img_s(model, hw, classes, iters):
    """A Bag-of-Tricks step (last stride 1, CE with label smoothing + batch-hard triplet, Adam)
    on an 8x4 P×K batch, as the Rust bench's re-ID cases."""
    import torch
    blk = model.layer4[0]
    (blk.conv2 if hasattr(blk, "conv3") else blk.conv1).stride = (1, 1)
    blk.downsample[0].stride = (1, 1)
    model.fc = torch.nn.Linear(model.fc.in_features, classes, bias=False)
    model.to(DEVICE).train()
    o = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    xb = torch.randn(32, 3, *hw).to(DEVICE)
    pids = ((torch.arange(32) // 4) * 37 % classes).to(DEVICE)
    feats = {}
    model.avgpool.register_forward_hook(lambda m, i, out_: feats.__setitem__("f", out_.flatten(1)))

    def step():
        o.zero_grad()
        logits = model(xb)
        f = feats["f"]
        d = torch.cdist(f, f)
        same = pids[:, None] == pids[None, :]
        ap = (d * same).max(1).values
        an = (d + same * (d.max() + 1)).min(1).values
        loss = torch.nn.functional.cross_entropy(logits, pids, label_smoothing=0.1) \
            + torch.relu(ap - an + 0.3).mean()
        loss.backward()
        o.step()
    return 32 / median_secs(step, iters)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--train-256", action="store_true",
                    help="also a re-ID training step (CE with label smoothing + batch-hard triplet, Adam) "
                         "of ResNet-18/50 at 32x3x256x128, as the Rust bench's --train-256")
    ap.add_argument("--train-only", action="store_true",
                    help="only the ResNet-18 training step (as the Rust bench's --train-only)")
    ap.add_argument("--train-case", choices=TRAIN_CASES,
                    help="time one training step shape alone and print {case, img_s} "
                         "(as the Rust bench's --train-case; bench/train_pairs.py alternates them)")
    ap.add_argument("--infer-batch", type=int,
                    help="time ResNet-50 inference at 256x128 with this batch alone (as the Rust "
                         "bench's --infer-batch)")
    ap.add_argument("--device", default="cpu",
                    help="device of --train-case and --infer-batch (cpu, cuda, cuda:N)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    try:
        import torch
        import torchvision
        from torchvision.models.resnet import Bottleneck, ResNet
    except ImportError:
        raise SystemExit("PyTorch and torchvision are not installed: pip install torch torchvision")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.train_case or args.infer_batch:
        if args.train_case:
            name, v = f"train {args.train_case}", train_case_img_s(args.train_case, args.iters)
        else:
            b = args.infer_batch
            m = torchvision.models.resnet50().eval().to(DEVICE)
            m.fc = torch.nn.Identity()
            inp = torch.randn(b, 3, 256, 128).to(DEVICE)
            with torch.inference_mode():
                name, v = f"infer r50-256x128-b{b}", b / median_secs(lambda: m(inp), args.iters)
        print(json.dumps({"case": name, "device": DEVICE, "img_s": v, "torch": torch.__version__})
              if args.json else f"{name} on {DEVICE}: {v:.2f} img/s")
        return

    out = {"train_r18_img_s": train_case_img_s("r18-128x64", args.iters)}
    if args.train_only:
        print(json.dumps(out) if args.json else f"{'train_r18_img_s':<40} {out['train_r18_img_s']:.2f}")
        return

    def infer(model, batch, channels_last=False):
        model.eval()
        inp = torch.randn(batch, 3, 256, 128)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            inp = inp.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            return batch / median_secs(lambda: model(inp), args.iters)

    r50 = torchvision.models.resnet50()
    r50.fc = torch.nn.Identity()
    half = ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=32)
    half.fc = torch.nn.Identity()
    out["infer_r50_b1_img_s"] = infer(r50, 1)
    out["infer_r50_b32_img_s"] = infer(r50, 32)
    out["infer_r50_b32_channels_last_img_s"] = infer(r50, 32, channels_last=True)
    out["infer_r50_half_b32_img_s"] = infer(half, 32)

    def paired_ratio(channels_last):
        # full and half timed alternately, median of per-pair ratios (as the Rust bench)
        inp = torch.randn(32, 3, 256, 128)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        models = [m.eval().to(memory_format=fmt) for m in (r50, half)]
        inp = inp.to(memory_format=fmt)
        ratios = []
        with torch.inference_mode():
            for m in models:
                m(inp)
            for _ in range(max(1, args.iters)):
                t = []
                for m in models:
                    s = time.perf_counter()
                    m(inp)
                    t.append(time.perf_counter() - s)
                ratios.append(t[0] / t[1])
        return statistics.median(ratios)

    out["half_over_full_speed"] = paired_ratio(False)
    out["infer_r50_half_b32_channels_last_img_s"] = infer(half, 32, channels_last=True)
    out["half_over_full_speed_channels_last"] = paired_ratio(True)
    if args.train_256:
        out["train_reid_r18_256x128_img_s"] = train_case_img_s("r18-256x128", min(args.iters, 2))
        out["train_reid_r50_256x128_img_s"] = train_case_img_s("r50-256x128", min(args.iters, 2))
    out["torch"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:<40} {v:.2f}" if isinstance(v, float) else f"{k:<40} {v}")


if __name__ == "__main__":
    main()
