"""What the PyTorch baselines in bench/ share: their common flags, and the network of our resolved config built
with the independent reference (test/reference/preact_torch.py), its BatchNorm swapped for torch.nn.BatchNorm2d
(PyTorch's own fast path)."""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "reference"))
import preact_torch  # noqa: E402
from train_step import native_batchnorm  # noqa: E402


def baseline_parser(description, size, batch):
    """Flags every baseline takes: --config (our resolved config as JSON), --size, --batch, --warmup, --threads."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", required=True)
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def reference_model(args):
    """(model, cfg) for the parsed flags, with torch's thread count set to --threads."""
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = json.load(f)
    model = preact_torch.PreActResNet(cfg)
    native_batchnorm(model)
    return model, cfg
