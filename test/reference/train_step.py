#!/usr/bin/python3
"""One SGD training step in PyTorch, the reference for our ONNX training-step graphs (test/training.test.ts).

Builds the network with the independent reference in preact_torch.py, swaps in torch.nn.BatchNorm2d (training
mode: batch statistics, running statistics at momentum 0.1 with the unbiased variance), loads parameters,
running statistics and momentum buffers (`<param>#momentum`) from a safetensors file, runs forward,
cross-entropy (mean), autograd backward and one torch.optim.SGD step, and writes every parameter, buffer and
momentum buffer after the step to a safetensors file under the same names.

  train_step.py --config C.json --state S.safetensors --input X.bin --labels L.bin --shape N,C,H,W --lr 0.1
                --momentum 0.9 --weight-decay 1e-4 [--nesterov] [--decay-on all|weights] --output OUT.safetensors
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import preact_torch  # noqa: E402


def native_batchnorm(module):
    """Replaces the reference's inference-only BatchNorm by torch.nn.BatchNorm2d with the same tensors."""
    for name, child in module.named_children():
        if isinstance(child, preact_torch.BatchNorm):
            bn = torch.nn.BatchNorm2d(child.weight.numel(), eps=preact_torch.BN_EPS, momentum=0.1)
            with torch.no_grad():
                bn.weight.copy_(child.weight)
                bn.bias.copy_(child.bias)
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
            setattr(module, name, bn)
        else:
            native_batchnorm(child)


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    js = json.dumps(header).encode()
    js += b" " * ((8 - (8 + len(js)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    for a in ("--config", "--state", "--input", "--labels", "--shape", "--output"):
        ap.add_argument(a, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--decay-on", choices=("all", "weights"), default="all")
    args = ap.parse_args()
    torch.set_num_threads(2)
    # float64 so the comparison measures onnxruntime's float32 error (REF_FLOAT32=1 for PyTorch's own float32)
    torch.set_default_dtype(torch.float32 if os.environ.get("REF_FLOAT32") else torch.float64)
    np_dtype = np.float32 if os.environ.get("REF_FLOAT32") else np.float64

    with open(args.config) as f:
        cfg = json.load(f)
    model = preact_torch.PreActResNet(cfg)
    native_batchnorm(model)
    model = model.to(torch.get_default_dtype())
    tensors, _ = preact_torch.read_safetensors(args.state)
    state = {k: torch.from_numpy(v.astype(np_dtype)) for k, v in tensors.items() if "#" not in k}
    model.load_state_dict(state, strict=False)
    missing = [k for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise SystemExit(f"state file lacks {missing[:5]}")
    model.train()

    shape = tuple(int(d) for d in args.shape.split(","))
    x = torch.from_numpy(np.fromfile(args.input, dtype="<f4").reshape(shape).astype(np_dtype))
    labels = torch.from_numpy(np.fromfile(args.labels, dtype="<i8"))

    # Weight decay on conv/FC weights only, or on everything (PyTorch's default with model.parameters()).
    named = dict(model.named_parameters())
    if args.decay_on == "all":
        groups = [{"params": list(named.values()), "weight_decay": args.weight_decay}]
    else:
        decayed = [p for n, p in named.items() if p.dim() > 1]
        plain = [p for n, p in named.items() if p.dim() <= 1]
        groups = [{"params": decayed, "weight_decay": args.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    for n, p in named.items():
        buf = tensors.get(f"{n}#momentum")
        if buf is not None:
            opt.state[p]["momentum_buffer"] = torch.from_numpy(buf.astype(np_dtype))

    opt.zero_grad()
    loss = F.cross_entropy(model(x), labels)
    loss.backward()
    opt.step()

    out = {}
    for n, t in model.state_dict().items():
        if not n.endswith("num_batches_tracked"):
            out[n] = t.detach().numpy()
    for n, p in named.items():
        out[f"{n}#momentum"] = opt.state[p]["momentum_buffer"].detach().numpy()
    out["loss"] = np.array([loss.item()])
    write_safetensors(args.output, out)


if __name__ == "__main__":
    main()
