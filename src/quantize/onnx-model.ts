// A decoded ONNX model as the quantiser edits it: the ModelProto, with helpers to read and make tensors and
// attributes, to find a value's producer and consumers, and to write the model back atomically.

import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../export/atomic.js';
import { type OnnxTypes, onnx } from '../export/proto.js';

export type ModelProto = OnnxTypes.ModelProto;
export type NodeProto = OnnxTypes.INodeProto;
export type TensorProto = OnnxTypes.ITensorProto;

const T = onnx.TensorProto.DataType;
export const DTYPE = { float: T.FLOAT, uint8: T.UINT8, int8: T.INT8, int32: T.INT32, int64: T.INT64 } as const;

/** protobufjs gives 64-bit integers as Long objects (the `long` package is installed) or numbers. */
export function num(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

export function readModel(path: string): ModelProto {
  return onnx.ModelProto.decode(readFileSync(path));
}

export function encodeModel(m: OnnxTypes.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(m).finish();
}

/** Writes the model atomically (a temporary renamed into place); returns its size in bytes. */
export function writeModel(m: OnnxTypes.IModelProto, path: string): number {
  const bytes = encodeModel(m);
  writeFileAtomic(path, (put) => put(bytes));
  return bytes.length;
}

export function dims(t: TensorProto): number[] {
  return (t.dims ?? []).map(num);
}

/** The values of a float32 initializer (raw_data or float_data). */
export function floatValues(t: TensorProto): Float32Array {
  const n = dims(t).reduce((p, d) => p * d, 1);
  if (t.dataType !== DTYPE.float) throw new Error(`initializer ${t.name} is not float32 (data type ${t.dataType})`);
  if (t.rawData && t.rawData.length > 0) {
    if (t.rawData.length !== n * 4) throw new Error(`initializer ${t.name}: ${t.rawData.length} bytes of raw data for ${n} float32 values`);
    const copy = new Uint8Array(t.rawData); // aligned copy
    return new Float32Array(copy.buffer, 0, n);
  }
  const f = Float32Array.from(t.floatData ?? []);
  if (f.length !== n) throw new Error(`initializer ${t.name}: ${f.length} float_data values for ${n}`);
  return f;
}

function raw(values: Float32Array | Int32Array | Int8Array | Uint8Array | BigInt64Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

export function tensor(name: string, dataType: number, shape: readonly number[], values: Float32Array | Int32Array | Int8Array | Uint8Array | BigInt64Array): TensorProto {
  return { name, dataType, dims: [...shape], rawData: raw(values) };
}

type AttrValue = number | number[] | string;

/** Node attributes from plain values: integers (or integer lists) as INT(S), other numbers as FLOAT, text as STRING. */
export function attrs(a: Record<string, AttrValue>, floats: readonly string[] = []): OnnxTypes.IAttributeProto[] {
  const A = onnx.AttributeProto.AttributeType;
  return Object.entries(a).map(([name, v]) => {
    if (typeof v === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(v) };
    if (Array.isArray(v)) return floats.includes(name) ? { name, type: A.FLOATS, floats: v } : { name, type: A.INTS, ints: v };
    return floats.includes(name) || !Number.isInteger(v) ? { name, type: A.FLOAT, f: v } : { name, type: A.INT, i: v };
  });
}

export function attr(n: NodeProto, name: string): OnnxTypes.IAttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}

export function intAttr(n: NodeProto, name: string, dflt: number): number {
  const a = attr(n, name);
  return a ? num(a.i) : dflt;
}

export function intsAttr(n: NodeProto, name: string): number[] | undefined {
  const a = attr(n, name);
  return a ? (a.ints ?? []).map(num) : undefined;
}

export function floatAttr(n: NodeProto, name: string, dflt: number): number {
  const a = attr(n, name);
  return a ? (a.f ?? dflt) : dflt;
}

/** Who produces and who reads each value of a graph. */
export interface GraphIndex {
  producer: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  initializers: Map<string, TensorProto>;
  inputs: Set<string>;
  outputs: Set<string>;
}

export function indexGraph(g: OnnxTypes.IGraphProto): GraphIndex {
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const n of g.node ?? []) {
    for (const o of n.output ?? []) producer.set(o, n);
    for (const i of n.input ?? []) {
      if (i === '') continue;
      const list = consumers.get(i);
      if (list) {
        if (!list.includes(n)) list.push(n);
      } else consumers.set(i, [n]);
    }
  }
  const initializers = new Map((g.initializer ?? []).map((t) => [t.name as string, t]));
  return {
    producer,
    consumers,
    initializers,
    inputs: new Set((g.input ?? []).map((v) => v.name as string).filter((n) => !initializers.has(n))),
    outputs: new Set((g.output ?? []).map((v) => v.name as string)),
  };
}

/** Op types that mean a model is quantised already (QDQ, operator-oriented, or integer ops). */
export const QUANTISED_OPS = new Set(['QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear', 'QLinearConv', 'QLinearMatMul', 'QLinearAdd', 'QLinearMul', 'ConvInteger', 'MatMulInteger', 'QGemm', 'QLinearGlobalAveragePool']);

export function opsetOf(m: OnnxTypes.IModelProto): number {
  const d = (m.opsetImport ?? []).find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  return num(d?.version);
}

export function metadataOf(m: OnnxTypes.IModelProto): Record<string, string> {
  return Object.fromEntries((m.metadataProps ?? []).map((p) => [p.key as string, p.value as string]));
}
