#!/usr/bin/env python3
"""Baseline for bench/train.ts: training steps of the same network in PyTorch CPU (autograd + torch.optim.SGD).

Prints one JSON line: median seconds per step and images/s, after warm-up steps.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "reference"))
import preact_torch  # noqa: E402
from train_step import native_batchnorm  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--size", type=int, default=32)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
torch.set_num_threads(args.threads)
with open(args.config) as f:
    cfg = json.load(f)
model = preact_torch.PreActResNet(cfg)
native_batchnorm(model)
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
x = torch.randn(args.batch, cfg["inChannels"], args.size, args.size)
y = torch.randint(0, cfg["classes"], (args.batch,))
times = []
for i in range(args.warmup + args.steps):
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    if i >= args.warmup:
        times.append(time.perf_counter() - t)
med = statistics.median(times)
print(json.dumps({"median_s": med, "images_per_s": args.batch / med, "torch": torch.__version__}))
