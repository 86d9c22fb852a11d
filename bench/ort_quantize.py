"""onnxruntime's own static quantiser (Python) on a float model, as the baseline bench/int8.ts compares against.

Usage: python bench/ort_quantize.py --model FLOAT.onnx --out INT8.onnx --calib INPUTS.f32 --shape N,C,H,W
       [--reduce-range] [--method minmax|percentile]
INPUTS.f32 holds the N preprocessed calibration inputs (float32, little-endian, [N, C, H, W]) that our quantiser
used, so both calibrate on the same tensors. Needs the onnxruntime and onnx wheels (a venv: see BENCHMARKS.md).
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static


class Inputs(CalibrationDataReader):
    def __init__(self, data: np.ndarray, name: str):
        self.rows = iter([{name: data[i : i + 1]} for i in range(data.shape[0])])

    def get_next(self):
        return next(self.rows, None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--input", default="input")
    p.add_argument("--reduce-range", action="store_true")
    p.add_argument("--method", choices=["minmax", "percentile"], default="minmax")
    a = p.parse_args()
    shape = [int(s) for s in a.shape.split(",")]
    data = np.fromfile(a.calib, dtype="<f4").reshape(shape)
    started = time.time()
    quantize_static(
        a.model,
        a.out,
        Inputs(data, a.input),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=a.reduce_range,
        calibrate_method=CalibrationMethod.MinMax if a.method == "minmax" else CalibrationMethod.Percentile,
    )
    print(json.dumps({"seconds": time.time() - started, "onnxruntime": onnxruntime.__version__}))


if __name__ == "__main__":
    sys.exit(main())
