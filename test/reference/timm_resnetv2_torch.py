#!/usr/bin/python3
"""timm's pre-activation ResNetV2 (timm/models/resnetv2.py: resnetv2_50, resnetv2_101, ...; BatchNorm, non-BiT)
as an independent PyTorch implementation with timm's module names, so that `state_dict()` has timm's real key
layout: stem.conv, stages.S.blocks.B.{norm1,conv1,norm2,conv2,norm3,conv3}, stages.S.blocks.0.downsample.conv,
norm, head.fc (a 1x1 conv with bias), and num_batches_tracked for every BatchNorm. Bottleneck blocks project in
the first block of every stage; basic blocks (resnetv2_18/34) only where the shape changes. Used by
test/import-timm.test.ts: writes random weights as safetensors (Debian's torch 1.13 has no safetensors package;
the format is written by hand) and the logits of inputs, computed in float64.

Structure (timm): stem = 7x7/2 conv (no BN), 3x3/2 max pool (pad 1). Block: x_preact = norm1(x) (BN + ReLU);
shortcut = downsample(x_preact) if the block has one (first block of every stage) else x; residual =
conv1(x_preact), conv2(norm2(.)) (stride here), conv3(norm3(.)); out = residual + shortcut. Head: norm (BN +
ReLU), global average pool, 1x1 conv with bias, flatten. Basic blocks (resnetv2_18/34) have two 3x3 convs.

CLI:
  timm_resnetv2_torch.py --unit bottleneck --stages 2,1,1,1 --seed 1 --safetensors OUT [--run X.bin N,C,H,W Y.bin]...
"""

import argparse
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BatchNorm2d (same state_dict keys, num_batches_tracked included) then ReLU."""

    def forward(self, x):
        return F.relu(super().forward(x))


def conv(cin, cout, k, stride=1):
    # timm's create_conv2d with padding '': symmetric ((stride - 1) + (k - 1)) // 2
    return nn.Conv2d(cin, cout, k, stride=stride, padding=((stride - 1) + (k - 1)) // 2, bias=False)


class DownsampleConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = conv(cin, cout, 1, stride)
        self.norm = nn.Identity()  # preact=True

    def forward(self, x):
        return self.norm(self.conv(x))


class PreActBottleneck(nn.Module):
    def __init__(self, cin, cout, stride, project):
        super().__init__()
        mid = cout // 4
        self.downsample = DownsampleConv(cin, cout, stride) if project else None
        self.norm1 = BatchNormAct2d(cin)
        self.conv1 = conv(cin, mid, 1)
        self.norm2 = BatchNormAct2d(mid)
        self.conv2 = conv(mid, mid, 3, stride)
        self.norm3 = BatchNormAct2d(mid)
        self.conv3 = conv(mid, cout, 1)

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = self.downsample(x_preact) if self.downsample is not None else x
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return x + shortcut


class PreActBasic(nn.Module):
    def __init__(self, cin, cout, stride, project):
        super().__init__()
        self.downsample = DownsampleConv(cin, cout, stride) if project else None
        self.norm1 = BatchNormAct2d(cin)
        self.conv1 = conv(cin, cout, 3, stride)
        self.norm2 = BatchNormAct2d(cout)
        self.conv2 = conv(cout, cout, 3)

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = self.downsample(x_preact) if self.downsample is not None else x
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        return x + shortcut


class ResNetStage(nn.Module):
    def __init__(self, cin, cout, stride, depth, block):
        super().__init__()
        self.blocks = nn.Sequential()
        for i in range(depth):
            s = stride if i == 0 else 1
            # PreActBottleneck projects in every stage's first block; PreActBasic only where the shape changes.
            project = i == 0 and (block is PreActBottleneck or s != 1 or cin != cout)
            self.blocks.add_module(str(i), block(cin, cout, s, project=project))
            cin = cout


class ClassifierHead(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.fc = nn.Conv2d(cin, classes, 1, bias=True)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3), keepdim=True)).flatten(1)


class ResNetV2(nn.Module):
    def __init__(self, layers, unit, classes):
        super().__init__()
        block = PreActBottleneck if unit == "bottleneck" else PreActBasic
        expansion = 4 if unit == "bottleneck" else 1
        self.stem = nn.Sequential()
        self.stem.add_module("conv", conv(3, 64, 7, 2))
        self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential()
        cin = 64
        for i, d in enumerate(layers):
            cout = 64 * 2**i * expansion
            self.stages.add_module(str(i), ResNetStage(cin, cout, 1 if i == 0 else 2, d, block))
            cin = cout
        self.norm = BatchNormAct2d(cin)
        self.head = ClassifierHead(cin, classes)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(x)
        return self.head(self.norm(x))


def randomize(model, seed):
    """He-normal convs, damped last conv of each block, and sane random BN parameters and statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                k, cout = m.kernel_size[0], m.out_channels
                m.weight.normal_(0, (2.0 / (k * k * cout)) ** 0.5, generator=g)
                if name.endswith("conv3") or (name.endswith("conv2") and isinstance(model.stages[0].blocks[0], PreActBasic)):
                    m.weight.mul_(0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))


def write_safetensors(path, state, metadata):
    """safetensors: u64 LE header length, JSON header (dtype, shape, data_offsets), raw little-endian data."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in state.items():
        a = t.detach().cpu().numpy()
        if a.dtype == np.float32:
            dtype, raw = "F32", a.astype("<f4").tobytes()
        elif a.dtype == np.int64:
            dtype, raw = "I64", a.astype("<i8").tobytes()
        else:
            raise TypeError(f"{name}: {a.dtype}")
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", choices=("basic", "bottleneck"), default="bottleneck")
    ap.add_argument("--stages", required=True)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--safetensors", required=True)
    ap.add_argument("--run", nargs=3, action="append", default=[], metavar=("INPUT", "SHAPE", "OUTPUT"))
    args = ap.parse_args(argv)

    torch.set_num_threads(2)
    model = ResNetV2([int(s) for s in args.stages.split(",")], args.unit, args.classes)
    randomize(model, args.seed)
    model.eval()
    write_safetensors(args.safetensors, model.state_dict(), {"format": "pt"})
    model = model.double()
    for inp, shape_text, out in args.run:
        shape = tuple(int(d) for d in shape_text.split(","))
        x = np.fromfile(inp, dtype="<f4").reshape(shape)
        with torch.no_grad():
            y = model(torch.from_numpy(x.astype(np.float64)))
        y.numpy().astype("<f4").tofile(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
