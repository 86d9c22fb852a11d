// The ONNX protobuf schema (onnx-proto, a CommonJS module) for ESM code: values and types under one name.

import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

export const onnx = onnxProto.onnx;
export type { OnnxTypes };
