#!/usr/bin/env python3
"""Baseline for bench/train.ts: training steps of the same network in PyTorch CPU (autograd + torch.optim.SGD).

Prints one JSON line: the step times after warm-up (seconds), their median and images/s. With --profile, one
more step runs under torch.autograd.profiler and the line also gives milliseconds per part of the step.
"""
import json
import statistics
import time

import torch
import torch.nn.functional as F

from torch_common import baseline_parser, reference_model

ap = baseline_parser(__doc__, size=32, batch=128)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--profile", action="store_true")
args = ap.parse_args()
model, cfg = reference_model(args)
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
x = torch.randn(args.batch, cfg["inChannels"], args.size, args.size)
y = torch.randint(0, cfg["classes"], (args.batch,))


def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


times = []
for i in range(args.warmup + args.steps):
    t = time.perf_counter()
    step()
    if i >= args.warmup:
        times.append(time.perf_counter() - t)
med = statistics.median(times)
result = {"times_s": times, "median_s": med, "images_per_s": args.batch / med, "torch": torch.__version__}

if args.profile:
    # Self time of the ops that do each part; everything else (loss, pooling, additions, allocation) is "other".
    parts = {
        "aten::mkldnn_convolution": "conv forward",
        "aten::thnn_conv2d": "conv forward",
        "aten::convolution_backward": "conv backward (dX and dW)",
        "aten::native_batch_norm": "BN forward",
        "aten::native_batch_norm_backward": "BN backward",
        "aten::clamp_min": "ReLU forward and backward",
        "aten::threshold_backward": "ReLU forward and backward",
    }
    with torch.autograd.profiler.profile() as prof:
        t = time.perf_counter()
        step()
        wall = time.perf_counter() - t
    ms = {}
    total = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total / 1000
        if e.key in parts:
            ms[parts[e.key]] = ms.get(parts[e.key], 0.0) + e.self_cpu_time_total / 1000
        elif e.key.startswith("Optimizer.step"):
            ms["SGD update"] = e.cpu_time_total / 1000
    ms["other"] = max(0.0, total - sum(ms.values()))
    result["profile_ms"] = ms
    result["profiled_step_s"] = wall
print(json.dumps(result))
