#!/usr/bin/env python3
"""A reid-prune checkpoint as a torchvision-style PyTorch module, from its `reid.arch` header alone.

    python3 tools/to_torchvision.py model.safetensors [--feature pool|neck] [--torchscript out.pt]
        [--check-features feats.safetensors --images DIR]

Needs torch and safetensors (`pip install torch safetensors numpy pillow`). The checkpoint's
`reid.arch` header (written by every reid-prune command) gives every conv's width, so a pruned
network, residual streams included, is rebuilt exactly: the module names are torchvision's
(`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, ...) plus the re-ID head (`bnneck`,
`classifier`), and the weights are loaded with `load_state_dict(strict=True)`. The module's
forward returns the re-ID feature (`pool`: the global-average-pooled backbone output; `neck`:
after the BNNeck). Options:
  --torchscript FILE  also write a traced TorchScript module (no reid-prune code needed to run it)
  --check-features F  compare the features with `reid-eval extract --feature <same>` on --images
                      (PNG/JPEG files exactly the network's input size); exit 1 beyond 1e-4 relative
Python importers use `load_reid_checkpoint(path, feature)` and `build_module(arch)`.
"""
import argparse
import json
import sys
from pathlib import Path

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _torch():
    try:
        import torch  # noqa: F401
        from safetensors import safe_open  # noqa: F401
    except ImportError as e:
        sys.exit(f"to_torchvision.py needs torch and safetensors ({e}): pip install torch safetensors")
    import torch
    return torch


def build_module(arch, feature="pool"):
    """An nn.Module with the widths of `arch` (the parsed `reid.arch` JSON)."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, kind, cin, spec):
            super().__init__()
            w, stride = spec["widths"], spec["stride"]
            if kind == "basic":
                convs = [(cin, w[0], 3, stride), (w[0], w[1], 3, 1)]
            else:  # torchvision's ResNet v1.5: the stride on the 3x3 conv
                convs = [(cin, w[0], 1, 1), (w[0], w[1], 3, stride), (w[1], w[2], 1, 1)]
            self.n = len(convs)
            for i, (ci, co, k, s) in enumerate(convs, start=1):
                setattr(self, f"conv{i}", nn.Conv2d(ci, co, k, s, k // 2, bias=False))
                setattr(self, f"bn{i}", nn.BatchNorm2d(co))
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if spec["downsample"]:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, w[-1], 1, stride, bias=False), nn.BatchNorm2d(w[-1]))

        def forward(self, x):
            out = x
            for i in range(1, self.n + 1):
                out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
                if i < self.n:
                    out = self.relu(out)
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ReidResNet(nn.Module):
        def __init__(self):
            super().__init__()
            stem = arch["stem_width"]
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = stem
            for s, blocks in enumerate(arch["stages"], start=1):
                layer = []
                for b in blocks:
                    layer.append(Block(arch["block"], cin, b))
                    cin = b["widths"][-1]
                setattr(self, f"layer{s}", nn.Sequential(*layer))
            if cin != arch["feature_dim"]:
                raise ValueError(f"reid.arch: last block width {cin} != feature_dim {arch['feature_dim']}")
            self.bnneck = nn.BatchNorm1d(cin) if arch["neck"] == "bnneck" else None
            self.classifier = (nn.Linear(cin, arch["num_classes"], bias=False)
                               if arch["num_classes"] > 0 else None)
            # without a neck, the neck feature is the pooled one (as in reid-eval)
            self.feature = feature if self.bnneck is not None else "pool"

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            f = x.mean(dim=(2, 3))
            if self.feature == "neck":
                f = self.bnneck(f)
            return f

    if feature not in ("pool", "neck"):
        raise ValueError(f"feature '{feature}': expected pool or neck")
    if arch.get("block") not in ("basic", "bottleneck") or len(arch.get("stages", [])) != 4:
        raise ValueError("reid.arch: expected a ResNet with basic or bottleneck blocks in 4 stages")
    return ReidResNet()


def read_arch(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "reid.arch" not in meta:
        sys.exit(f"{path}: no 'reid.arch' header: not a reid-prune checkpoint "
                 "(plain torchvision weights load into torchvision.models directly)")
    try:
        return json.loads(meta["reid.arch"])
    except json.JSONDecodeError as e:
        sys.exit(f"{path}: 'reid.arch' is not valid JSON: {e}")


def load_reid_checkpoint(path, feature="pool"):
    """The checkpoint as an eval-mode module, weights loaded with strict=True."""
    torch = _torch()
    from safetensors.torch import load_file

    model = build_module(read_arch(path), feature)
    state = load_file(str(path))
    # reid-prune does not store BN's num_batches_tracked counters (eval never reads them):
    # give the module its own, every other tensor must match exactly.
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = buf.clone()
    model.load_state_dict(state, strict=True)
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--feature", default="pool", choices=["pool", "neck"])
    ap.add_argument("--torchscript")
    ap.add_argument("--check-features")
    ap.add_argument("--images")
    a = ap.parse_args()
    torch = _torch()
    model = load_reid_checkpoint(a.checkpoint, a.feature)
    arch = read_arch(a.checkpoint)
    params = sum(p.numel() for p in model.parameters())
    print(f"{a.checkpoint}: resnet{arch['depth']}, {params / 1e6:.2f} M parameters, "
          f"feature '{a.feature}' of width {arch['feature_dim']}; loaded with strict=True")
    if a.torchscript:
        h, w = 256, 128
        traced = torch.jit.trace(model, torch.zeros(1, 3, h, w))
        traced.save(a.torchscript)
        print(f"TorchScript: {a.torchscript}")
    if a.check_features:
        if not a.images:
            sys.exit("--check-features needs --images (the folder given to reid-eval extract)")
        import numpy as np
        from PIL import Image
        from safetensors.numpy import load_file as load_np

        files = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        imgs = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) for f in files])
        x = (imgs / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        with torch.no_grad():
            got = model(x).numpy()
        ours = load_np(a.check_features)["features"]
        if ours.shape != got.shape:
            sys.exit(f"{a.check_features}: features of shape {ours.shape}, the module gives {got.shape}")
        rel = float(np.abs(got - ours).max() / max(np.abs(ours).max(), 1e-6))
        print(f"PyTorch features vs reid-eval: max rel diff {rel:.2e} over {len(files)} images")
        sys.exit(0 if rel <= 1e-4 else 1)


if __name__ == "__main__":
    main()
