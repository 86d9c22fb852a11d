#!/usr/bin/env bash
# The GPU benchmark, prepared for the day a machine with an NVIDIA GPU is at hand (none has been so far): ResNet-110
# training steps (batch 128) on onnxruntime's CUDA provider, and WebGPU where the driver allows, against the CPU step
# for equality and speed, and ResNet-200 inference latency at the paper's 1x3x320x320 crop (bench/gpu.ts). Prints
# the rows for BENCHMARKS.md and writes bench/out/gpu-cuda.json, bench/out/gpu-webgpu.json.
#
#   bench/gpu.sh              on the GPU machine: installs what is missing, then measures (under 8 minutes)
#   bench/gpu.sh --cpu-only   a dry run of everything but the GPU providers, on any machine (smaller counts)
#
# On a bare machine it installs: the npm dependencies (npm ci), onnxruntime-node's CUDA provider (its install script
# fetches it from NuGet; or set ORT_CUDA_NUPKG=/path/Microsoft.ML.OnnxRuntime.Gpu.Linux.1.30.0.nupkg to take the
# libraries from a package fetched elsewhere), and, when the system lacks the CUDA 12 / cuDNN 9 libraries that
# provider loads, NVIDIA's pip wheels of them into bench/out/cuda-libs (a venv) put on LD_LIBRARY_PATH.
# The GPU math is pinned to fp32 (NVIDIA_TF32_OVERRIDE=0) so that the equality check compares like with like.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
cpu_only=0
case "${1:-}" in
  --cpu-only) cpu_only=1 ;;
  "") ;;
  *) echo "usage: bench/gpu.sh [--cpu-only]" >&2; exit 2 ;;
esac
fail() { echo "error: $*" >&2; exit 1; }
say() { echo "[gpu.sh $((SECONDS - started))s] $*" >&2; }

if [ "$cpu_only" = 0 ]; then
  command -v nvidia-smi >/dev/null || fail "no NVIDIA driver here (nvidia-smi not found): this benchmark needs an NVIDIA GPU; bench/gpu.sh --cpu-only runs its CPU parts"
  gpus=$(nvidia-smi -L 2>/dev/null || true)
  [ -n "$gpus" ] || fail "nvidia-smi lists no GPU (driver loaded without a device?): this benchmark needs one; bench/gpu.sh --cpu-only runs its CPU parts"
  say "GPU: $gpus"
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || fail "Node.js >= 20 is needed, found $(node --version)"

# npm dependencies, without onnxruntime-node's download (that comes next, on purpose).
if [ ! -d node_modules/onnxruntime-node ] || [ ! -d node_modules/tsx ]; then
  say "npm ci"
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund >&2
fi

if [ "$cpu_only" = 0 ]; then
  ort_bin=node_modules/onnxruntime-node/bin/napi-v6/linux/x64
  if [ ! -f "$ort_bin/libonnxruntime_providers_cuda.so" ]; then
    if [ -n "${ORT_CUDA_NUPKG:-}" ]; then
      say "CUDA provider from $ORT_CUDA_NUPKG"
      python3 - "$ORT_CUDA_NUPKG" "$ort_bin" <<'PY'
import sys, zipfile, os
pkg, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(pkg) as z:
    for name in ("libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_tensorrt.so"):
        with z.open(f"runtimes/linux-x64/native/{name}") as src, open(os.path.join(dest, name), "wb") as out:
            out.write(src.read())
PY
    else
      say "CUDA provider: node node_modules/onnxruntime-node/script/install.js (NuGet)"
      ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js >&2 ||
        fail "could not fetch onnxruntime-node's CUDA provider from NuGet; fetch Microsoft.ML.OnnxRuntime.Gpu.Linux 1.30.0 elsewhere and rerun with ORT_CUDA_NUPKG=/path/to/it.nupkg"
    fi
  fi
  [ -f "$ort_bin/libonnxruntime_providers_cuda.so" ] || fail "$ort_bin/libonnxruntime_providers_cuda.so is still missing after the install"

  missing() { ldd "$ort_bin/libonnxruntime_providers_cuda.so" | awk '/not found/ {print $1}' | tr '\n' ' '; }
  if [ -n "$(missing)" ]; then
    say "the CUDA provider needs: $(missing)- installing NVIDIA's CUDA 12 / cuDNN 9 wheels into bench/out/cuda-libs"
    mkdir -p bench/out
    [ -x bench/out/cuda-libs/bin/pip ] || python3 -m venv bench/out/cuda-libs
    bench/out/cuda-libs/bin/pip install -q nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 'nvidia-cudnn-cu12>=9,<10' nvidia-cufft-cu12 nvidia-curand-cu12 nvidia-cuda-nvrtc-cu12 >&2 ||
      fail "pip could not install the CUDA 12 / cuDNN 9 libraries; install CUDA 12 and cuDNN 9 system-wide and rerun"
    libs=$(ls -d bench/out/cuda-libs/lib/python3*/site-packages/nvidia/*/lib | tr '\n' ':')
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
    [ -z "$(missing)" ] || fail "the CUDA provider still cannot find: $(missing)(LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
  fi
  export NVIDIA_TF32_OVERRIDE=0
fi

mkdir -p bench/out
if [ "$cpu_only" = 1 ]; then
  say "dry run: the CPU parts, with the CPU standing in for the device"
  npx tsx bench/gpu.ts --eps cpu --steps 2 --timed 2 --runs 3 --json bench/out/gpu-dry-run.json
  say "done"
  exit 0
fi
# CUDA first (what the day is for), then WebGPU in its own process and time budget: Dawn may compile shaders slowly,
# or find no Vulkan driver, which is a finding, not a failure of the script.
left=$((470 - (SECONDS - started)))
[ "$left" -gt 120 ] || fail "installing took $((SECONDS - started)) s; too little of the 8 minutes is left to measure (run again: nothing is installed twice)"
say "CUDA: training steps and inference latency"
timeout $((left * 2 / 3)) npx tsx bench/gpu.ts --eps cuda --json bench/out/gpu-cuda.json ||
  fail "the CUDA run failed or ran past its $((left * 2 / 3)) s (see above)"
left=$((470 - (SECONDS - started)))
if [ "$left" -gt 60 ]; then
  say "WebGPU: training steps and inference latency (${left} s left)"
  timeout "$left" npx tsx bench/gpu.ts --eps webgpu --steps 2 --timed 3 --runs 5 --json bench/out/gpu-webgpu.json ||
    echo "note: the WebGPU run failed or ran past ${left} s; the CUDA figures above stand" >&2
else
  echo "note: no time left for WebGPU (${left} s)" >&2
fi
say "done: copy the tables above into BENCHMARKS.md (\"GPU\"), with the GPU named: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
