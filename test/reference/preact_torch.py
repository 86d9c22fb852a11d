#!/usr/bin/python3
"""An independent PyTorch reference of the pre-activation ResNet family (He et al. 2016, "Identity Mappings
in Deep Residual Networks"), used by test/parity.test.ts to check our ONNX exports numerically.

Written from the paper (Fig. 2, Fig. 4, appendix) and /work/shared/SPEC-preact-resnet.md; the module tree
is laid out so that `state_dict()` keys equal the parameter names of resnet-onnx checkpoints exactly
(`stem.conv.weight`, `stage2.unit1.bn1.running_var`, `stage2.unit1.shortcut.weight`, `head.fc.bias`, ...),
so a checkpoint loads with `load_state_dict(strict=True)`.

CLI (raw little-endian float32 files, eval mode):
  preact_torch.py --config CONFIG.json --weights W.safetensors --input X.bin --shape N,C,H,W --output Y.bin
CONFIG.json is a resolved config (what resolveConfig() returns). By default the reference computes in
float64 so that the comparison measures the runtime's float32 error, not the reference's own.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
PREACT_VARIANTS = ("full-preact", "relu-only-preact")
ACTIVATIONS = ("full-preact", "original", "bn-after-add", "relu-before-add", "relu-only-preact")
SHORTCUTS = ("identity", "scaling", "exclusive-gating", "shortcut-gating", "conv1x1", "dropout")


# ----------------------------------------------------------------------------------------------------------
# safetensors (Debian's torch 1.13 has no safetensors package)

_ST_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
    """Returns ({name: np.ndarray float32 or native}, metadata). 8-byte LE header length, JSON header, data."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise ValueError(f"{path}: header length {header_len} exceeds the file")
    header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    metadata = header.pop("__metadata__", {}) or {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        shape = tuple(e["shape"])
        if end > len(data):
            raise ValueError(f"{path}: tensor {name!r} ends past the end of the file")
        raw = data[begin:end]
        dt = e["dtype"]
        if dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=_ST_DTYPES[dt])
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dt}")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ValueError(f"{path}: tensor {name!r} has {arr.size} elements, shape {shape} needs {count}")
        tensors[name] = arr.reshape(shape).copy()
    return tensors, metadata


# ----------------------------------------------------------------------------------------------------------
# Layers


class BatchNorm(nn.Module):
    """Inference BatchNorm with exactly the four tensors of a checkpoint (no num_batches_tracked)."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x):
        # y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel.
        shape = (1, -1, 1, 1)
        inv = torch.rsqrt(self.running_var + BN_EPS)
        return (x - self.running_mean.view(shape)) * (inv * self.weight).view(shape) + self.bias.view(shape)


def conv(cin, cout, k, stride=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


class Empty(nn.Module):
    """A named scope with no tensors of its own."""


# ----------------------------------------------------------------------------------------------------------
# Units


class Unit(nn.Module):
    """One residual unit x_{l+1} = combine(h(x_l), F(x_l)) with the paper's activation placements.

    convs: list of (in, out, kernel, stride) of the residual branch F.
    first: first unit of a stage -- for pre-activation variants the pre-activation is applied once before the
      split and both F and the shortcut read it (paper appendix), unless `stem_preactivated` (ImageNet
      stage 1 unit 1, whose input already went through the stem's BN-ReLU).
    """

    def __init__(self, cfg, convs, in_c, out_c, stride, first, stem_preactivated):
        super().__init__()
        self.act = cfg["activation"]
        sc = cfg["shortcut"]
        self.sc_kind = sc["kind"]
        self.scale = float(sc["scale"])
        self.scale_residual = bool(sc["scaleResidual"])
        self.k = len(convs)
        self.pre_split = self.act in PREACT_VARIANTS and first
        self.pre_split_here = self.pre_split and not stem_preactivated
        self.reshapes = stride != 1 or in_c != out_c
        self.stride = stride
        self.out_c = out_c
        self.in_c = in_c
        self.projection = cfg["projection"]

        for i, (ci, co, k, s) in enumerate(convs, start=1):
            setattr(self, f"conv{i}", conv(ci, co, k, s))
        # BatchNorm placement per Fig. 4 (one BN per conv, named after the conv it belongs to).
        if self.act == "full-preact":
            # BN i normalises the input of conv i: over conv i's input channels.
            for i, (ci, co, k, s) in enumerate(convs, start=1):
                setattr(self, f"bn{i}", BatchNorm(ci))
            if self.pre_split and stem_preactivated:
                del self.bn1  # the stem's BN-ReLU is this unit's pre-activation
        elif self.act == "bn-after-add":
            for i, (ci, co, k, s) in enumerate(convs, start=1):
                setattr(self, f"bn{i}", BatchNorm(co))  # the last one sits after the addition
        else:  # original, relu-before-add, relu-only-preact: BN right after conv i
            for i, (ci, co, k, s) in enumerate(convs, start=1):
                setattr(self, f"bn{i}", BatchNorm(co))

        if self.reshapes:
            if self.projection == "B":
                self.shortcut = nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False)
        else:
            if self.sc_kind == "conv1x1":
                self.shortcut = nn.Conv2d(in_c, out_c, 1, bias=False)
            if self.sc_kind in ("exclusive-gating", "shortcut-gating"):
                self.gate = nn.Conv2d(in_c, out_c, 1, bias=True)

    def branch(self, x, skip_first_preact):
        h = x
        for i in range(1, self.k + 1):
            c = getattr(self, f"conv{i}")
            bn = getattr(self, f"bn{i}", None)
            last = i == self.k
            if self.act == "full-preact":
                if not (i == 1 and skip_first_preact):
                    h = F.relu(bn(h))
                h = c(h)
            elif self.act == "relu-only-preact":
                if not (i == 1 and skip_first_preact):
                    h = F.relu(h)
                h = bn(c(h))
            elif self.act == "original":
                h = bn(c(h))
                if not last:
                    h = F.relu(h)
            elif self.act == "bn-after-add":
                h = c(h)
                if not last:
                    h = F.relu(bn(h))
            elif self.act == "relu-before-add":
                h = F.relu(bn(c(h)))
            else:
                raise ValueError(self.act)
        return h

    def option_a(self, x):
        y = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        extra = self.out_c - x.shape[1]
        if extra > 0:
            zeros = torch.zeros(y.shape[0], extra, y.shape[2], y.shape[3], dtype=y.dtype)
            y = torch.cat([y, zeros], dim=1)
        return y

    def forward(self, x):
        s_in = x
        if self.pre_split_here:
            if self.act == "full-preact":
                s_in = F.relu(self.bn1(x))
            else:
                s_in = F.relu(x)
        f = self.branch(s_in, skip_first_preact=self.pre_split)
        if self.reshapes:
            s = self.option_a(s_in) if self.projection == "A" else self.shortcut(s_in)
            y = s + f
        else:
            kind = self.sc_kind
            if kind == "identity" or kind == "dropout":  # dropout on the shortcut is the identity at inference
                y = s_in + f
            elif kind == "conv1x1":
                y = self.shortcut(s_in) + f
            elif kind == "scaling":
                y = self.scale * s_in + ((1.0 - self.scale) * f if self.scale_residual else f)
            elif kind in ("exclusive-gating", "shortcut-gating"):
                g = torch.sigmoid(self.gate(s_in))
                y = (1.0 - g) * s_in + (g * f if kind == "exclusive-gating" else f)
            else:
                raise ValueError(kind)
        if self.act == "original":
            y = F.relu(y)
        elif self.act == "bn-after-add":
            y = F.relu(getattr(self, f"bn{self.k}")(y))
        return y


# ----------------------------------------------------------------------------------------------------------
# Networks


class PreActResNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg["activation"] not in ACTIVATIONS:
            raise ValueError(f"unknown activation {cfg['activation']!r}")
        if cfg["shortcut"]["kind"] not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {cfg['shortcut']['kind']!r}")
        self.cfg = cfg
        self.imagenet = cfg["family"] == "imagenet"
        self.preact = cfg["activation"] in PREACT_VARIANTS
        unit_kind = cfg["unit"]
        in_c = cfg["inChannels"]

        self.stem = Empty()
        if self.imagenet:
            self.stem.conv = nn.Conv2d(in_c, 64, 7, stride=2, padding=3, bias=False)
            self.stem.bn = BatchNorm(64)
            c = 64
        else:
            self.stem.conv = conv(in_c, 16, 3)
            if not self.preact:
                self.stem.bn = BatchNorm(16)
            c = 16

        self.stage_names = []
        for si, st in enumerate(cfg["stages"]):
            stage = Empty()
            m, n, stride = st["width"], st["units"], st["stride"]
            out_c = 4 * m if unit_kind == "bottleneck" else m
            for u in range(n):
                s = stride if u == 0 else 1
                if unit_kind == "single":
                    convs = [(c, m, 3, s)]
                elif unit_kind == "basic":
                    convs = [(c, m, 3, s), (m, m, 3, 1)]
                elif unit_kind == "bottleneck":
                    s1, s3 = (s, 1) if cfg["strideOn"] == "1x1" else (1, s)
                    convs = [(c, m, 1, s1), (m, m, 3, s3), (m, out_c, 1, 1)]
                else:
                    raise ValueError(unit_kind)
                unit = Unit(cfg, convs, c, out_c, s, first=(u == 0), stem_preactivated=(u == 0 and si == 0 and self.imagenet))
                setattr(stage, f"unit{u + 1}", unit)
                c = out_c
            name = f"stage{si + 1}"
            setattr(self, name, stage)
            self.stage_names.append((name, n))

        self.head = Empty()
        if self.preact:
            self.head.bn = BatchNorm(c)
        self.head.fc = nn.Linear(c, cfg["classes"], bias=True)

    def forward(self, x):
        if self.imagenet:
            h = F.relu(self.stem.bn(self.stem.conv(x)))
            h = F.max_pool2d(h, kernel_size=3, stride=2, padding=1)
        else:
            h = self.stem.conv(x)
            if not self.preact:
                h = F.relu(self.stem.bn(h))
        for name, n in self.stage_names:
            stage = getattr(self, name)
            for u in range(n):
                h = getattr(stage, f"unit{u + 1}")(h)
        if self.preact:
            h = F.relu(self.head.bn(h))
        h = h.mean(dim=(2, 3))
        return self.head.fc(h)


def load_checkpoint(model, path):
    tensors, _ = read_safetensors(path)
    # Optimiser state (names with '#') may sit beside the weights in training checkpoints.
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in tensors.items() if "#" not in k}
    model_keys = set(model.state_dict().keys())
    missing = sorted(model_keys - state.keys())
    unexpected = sorted(state.keys() - model_keys)
    if missing or unexpected:
        raise SystemExit(f"checkpoint {path} does not match the reference model: missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)})")
    model.load_state_dict(state, strict=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", help="safetensors checkpoint; without it the model keeps PyTorch's init")
    ap.add_argument("--input", help="raw float32 input")
    ap.add_argument("--shape", help="N,C,H,W of the input")
    ap.add_argument("--output", help="raw float32 logits")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--list-keys", action="store_true", help="print the state_dict keys with shapes and exit")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with open(args.config) as f:
        cfg = json.load(f)
    model = PreActResNet(cfg)
    if args.list_keys:
        for k, v in model.state_dict().items():
            print(k, list(v.shape))
        return 0
    if args.weights:
        load_checkpoint(model, args.weights)
    if not (args.input and args.shape and args.output):
        ap.error("--input, --shape and --output are required")
    shape = tuple(int(d) for d in args.shape.split(","))
    x = np.fromfile(args.input, dtype="<f4")
    if x.size != int(np.prod(shape)):
        raise SystemExit(f"{args.input} holds {x.size} floats, shape {shape} needs {int(np.prod(shape))}")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    model = model.to(dtype).eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x.reshape(shape)).to(dtype))
    y.to(torch.float32).numpy().astype("<f4").tofile(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
