"""The README's training loop in Python onnxruntime: drives an exported training-step graph from its files.

Loads STEP.onnx with onnxruntime, the initial state from STEP.state.safetensors (tensor names = the graph's
state inputs), runs one step per batch (feeding `input`, `labels`, `lr` and the state), feeds every `X#next`
output back as `X`, and writes the losses and the final state to a safetensors file (`loss` [steps], then every
state tensor under its input name). Needs only onnxruntime and numpy (run it with the venv's python, see
test/training-export.test.ts); prints onnxruntime's version and the session's input count.

  ort_train_loop.py --model STEP.onnx --state STEP.state.safetensors --inputs X.bin --labels L.bin
                    --shape STEPS,N,C,H,W --lrs 0.1,0.05 --output OUT.safetensors
"""
import argparse
import json
import struct
import sys

import numpy as np
import onnxruntime as ort

NEXT = "#next"


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "F32":
            sys.exit(f"FAIL: {path}: tensor {name} is {e['dtype']}, F32 expected")
        begin, end = e["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(e["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--shape", required=True, help="STEPS,N,C,H,W of --inputs")
    ap.add_argument("--lrs", required=True, help="one learning rate per step")
    ap.add_argument("--output", required=True)
    args = ap.parse_args(argv)

    steps, n, c, h, w = (int(d) for d in args.shape.split(","))
    x = np.fromfile(args.inputs, dtype="<f4").reshape(steps, n, c, h, w)
    labels = np.fromfile(args.labels, dtype="<i8").reshape(steps, n)
    lrs = [float(v) for v in args.lrs.split(",")]
    if len(lrs) != steps:
        sys.exit(f"FAIL: {len(lrs)} learning rates for {steps} steps")

    state = read_safetensors(args.state)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    missing = inputs - set(state) - {"input", "labels", "lr"}
    extra = set(state) - inputs
    if missing or extra:
        sys.exit(f"FAIL: state file and graph inputs differ: missing {sorted(missing)[:5]}, not inputs {sorted(extra)[:5]}")
    print(f"onnxruntime {ort.__version__}: {len(inputs)} session inputs, {len(state)} state tensors")

    losses = []
    for k in range(steps):
        feeds = dict(state)
        feeds["input"] = x[k]
        feeds["labels"] = labels[k]
        feeds["lr"] = np.array(lrs[k], dtype=np.float32)
        names = ["loss"] + [f"{s}{NEXT}" for s in state]
        out = dict(zip(names, sess.run(names, feeds)))
        losses.append(float(out["loss"]))
        state = {s: out[f"{s}{NEXT}"] for s in state}
    write_safetensors(args.output, {"loss": np.array(losses, dtype=np.float32), **state})
    print("losses", " ".join(f"{v:.6f}" for v in losses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
