#!/usr/bin/env bash
# Trains the model kept in models/ (pre-act ResNet-20 on the real Fashion-MNIST from Debian's
# dataset-fashion-mnist), then copies the model, its log, curves and checkpoint there.
# Takes about 50 minutes on the project's 2-core machine. Results: BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/fashion-mnist-resnet20
npm run --silent build
node dist/src/cli/bin.js train --depth 20 --dataset fashion-mnist --batch 128 --epochs 12 \
  --eval-every 936 --checkpoint-every 468 --log-every 50 --seed 0 --out "$out" "$@"
cp "$out/model.onnx" models/preact-resnet20-fashion-mnist.onnx
cp "$out/checkpoint.safetensors" models/preact-resnet20-fashion-mnist.safetensors
cp "$out/log.jsonl" models/preact-resnet20-fashion-mnist.log.jsonl
cp "$out/curves.html" models/preact-resnet20-fashion-mnist.curves.html
