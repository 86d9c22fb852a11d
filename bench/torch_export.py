#!/usr/bin/env python3
"""Baseline for bench/export.ts: torch.onnx.export of the same network, with its time and peak memory.

Prints one JSON line: seconds for building the model and for torch.onnx.export, and the process's peak RSS.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "reference"))
import preact_torch  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--size", type=int, default=32)
ap.add_argument("--out", required=True)
args = ap.parse_args()
torch.set_num_threads(2)
with open(args.config) as f:
    cfg = json.load(f)
t0 = time.perf_counter()
model = preact_torch.PreActResNet(cfg).eval()
t1 = time.perf_counter()
x = torch.randn(1, cfg["inChannels"], args.size, args.size)
with torch.no_grad():
    torch.onnx.export(model, x, args.out, input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N"}})
t2 = time.perf_counter()
print(json.dumps({"build_s": t1 - t0, "export_s": t2 - t1, "total_s": t2 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bytes": os.path.getsize(args.out)}))
