#!/usr/bin/env python3
"""Baseline for bench/latency.ts: the same network in PyTorch CPU eager (and via torch.onnx), timed.

Builds the network from our resolved config with the independent reference in test/reference/preact_torch.py,
swaps its checkpoint-shaped BatchNorm for torch.nn.BatchNorm2d (PyTorch's own fast path, in eval mode), and times
`model(x)` under no_grad in eval mode. With --onnx-out, also writes the network through torch.onnx.export so
the caller can time PyTorch's own ONNX export in onnxruntime. Prints one JSON line.
"""
import json
import statistics
import time

import torch

from torch_common import baseline_parser, reference_model


def main():
    ap = baseline_parser(__doc__, size=320, batch=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--onnx-out")
    args = ap.parse_args()
    model, cfg = reference_model(args)
    model.eval()
    x = torch.randn(args.batch, cfg["inChannels"], args.size, args.size)
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            t = time.perf_counter()
            model(x)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        if args.onnx_out:
            torch.onnx.export(model, x, args.onnx_out, input_names=["input"], output_names=["logits"], opset_version=17,
                              dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N"}})
    print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "runs": len(times), "torch": torch.__version__, "threads": args.threads}))


if __name__ == "__main__":
    main()
