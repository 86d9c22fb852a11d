#!/usr/bin/python3
"""Checks an ONNX file with the reference tools of Debian: onnx's checker (full_check: also strict shape
inference) and, optionally, OpenCV's DNN module as an independent runtime.

  onnx_check.py MODEL.onnx
  onnx_check.py MODEL.onnx --input X.bin --shape N,C,H,W --opencv-output Y.bin

Input and output are raw little-endian float32. Exits 0 when everything passed; otherwise prints what failed
(to stderr, first line starting with "FAIL") and exits 1 (checker), 2 (OpenCV could not load or run the model)
or 3 (bad arguments/files).
"""

import argparse
import sys

import numpy as np


def fail(code, msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--input", help="raw float32 input for OpenCV")
    ap.add_argument("--shape", help="N,C,H,W of --input")
    ap.add_argument("--opencv-output", help="where to write OpenCV's output (raw float32)")
    args = ap.parse_args(argv)

    import onnx

    try:
        model = onnx.load(args.model)
    except Exception as e:  # noqa: BLE001 - any load error is a failure to report
        fail(1, f"onnx {onnx.__version__} cannot load {args.model}: {type(e).__name__}: {e}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001
        fail(1, f"onnx {onnx.__version__} checker (full_check=True) rejects {args.model}: {type(e).__name__}: {e}")
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    print(f"checker ok: {args.model} (IR {model.ir_version}, opsets {opsets}, {len(model.graph.node)} nodes)")
    known = onnx.defs.onnx_opset_version()
    if opsets.get("ai.onnx", 0) > known or model.ir_version > onnx.IR_VERSION:
        # onnx checks such a model against the newest schemas it knows, so a pass proves less.
        print(f"warning: onnx {onnx.__version__} knows opset <= {known} and IR <= {onnx.IR_VERSION}; "
              f"this model has opset {opsets.get('ai.onnx')} and IR {model.ir_version}", file=sys.stderr)

    if args.opencv_output is None:
        return 0
    if not (args.input and args.shape):
        fail(3, "--opencv-output needs --input and --shape")
    shape = tuple(int(d) for d in args.shape.split(","))
    x = np.fromfile(args.input, dtype="<f4")
    if x.size != int(np.prod(shape)):
        fail(3, f"{args.input} holds {x.size} floats, shape {shape} needs {int(np.prod(shape))}")

    import cv2

    ops = sorted({n.op_type for n in model.graph.node})
    try:
        net = cv2.dnn.readNetFromONNX(args.model)
    except cv2.error as e:
        fail(2, f"OpenCV {cv2.__version__} readNetFromONNX cannot load {args.model} (ops used: {', '.join(ops)}): {e}")
    try:
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        net.setInput(np.ascontiguousarray(x.reshape(shape).astype(np.float32)))
        y = net.forward()
    except cv2.error as e:
        fail(2, f"OpenCV {cv2.__version__} cannot run {args.model} on input {shape} (ops used: {', '.join(ops)}): {e}")
    y = np.asarray(y, dtype=np.float32)
    y.astype("<f4").tofile(args.opencv_output)
    print(f"opencv ok: {cv2.__version__}, output shape {list(y.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
