// The ONNX operators the DSL can emit: each op's attribute schema and its type/shape inference, in one table.
// Adding an op (and, later, its gradient rule) touches this file only.

import {
  type DType,
  type Dim,
  type Shape,
  type TensorData,
  type TensorType,
  dimText,
  mapDim,
  sameDim,
  shapeText,
  typeText,
} from './types.js';

export type AttrKind = 'int' | 'float' | 'ints' | 'floats' | 'string' | 'tensor';
export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorData };
export type Attrs = Readonly<Record<string, Attr>>;
export type RawAttr = number | readonly number[] | string | TensorData;

/** What inference sees of an input: its type and, if it is a known constant, its value. */
export interface InputInfo extends TensorType {
  readonly constant?: TensorData;
}

export interface OpDef {
  /** Attribute names and kinds this op accepts; any other attribute is an error. */
  readonly attrs: Readonly<Record<string, AttrKind>>;
  /** Allowed input counts (inclusive). Optional inputs may be given as null. */
  readonly inputs: readonly [number, number];
  /** Output types; throws an Error whose message says what is wrong. */
  infer(inputs: readonly (InputInfo | null)[], attrs: AttrReader): TensorType[];
}

/** Typed access to a node's attributes with ONNX defaults. */
export class AttrReader {
  constructor(private readonly attrs: Attrs) {}
  int(name: string, dflt: number): number {
    const a = this.attrs[name];
    return a ? (a.value as number) : dflt;
  }
  float(name: string, dflt: number): number {
    const a = this.attrs[name];
    return a ? (a.value as number) : dflt;
  }
  ints(name: string, dflt: readonly number[] | undefined): readonly number[] | undefined {
    const a = this.attrs[name];
    return a ? (a.value as readonly number[]) : dflt;
  }
  string(name: string, dflt: string): string {
    const a = this.attrs[name];
    return a ? (a.value as string) : dflt;
  }
  tensor(name: string): TensorData | undefined {
    const a = this.attrs[name];
    return a ? (a.value as TensorData) : undefined;
  }
}

function need(cond: boolean, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

function req(x: InputInfo | null, what: string): InputInfo {
  need(x !== null, `missing input ${what}`);
  return x;
}

function rank(x: InputInfo, r: number, what: string): void {
  need(x.shape.length === r, `${what} must have rank ${r}, got ${typeText(x)}`);
}

function float(x: InputInfo, what: string): void {
  need(x.dtype === 'float32', `${what} must be float32, got ${x.dtype}`);
}

function concreteInt64(x: InputInfo | null, what: string): number[] {
  need(x !== null && x.constant !== undefined && x.constant.dtype === 'int64', `${what} must be a constant int64 tensor`);
  return Array.from(x.constant.values() as BigInt64Array, Number);
}

/** numpy-style multidirectional broadcasting, as ONNX Add/Mul/Sub/Div define it. */
export function broadcastShapes(a: Shape, b: Shape): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)];
    const db = i < n - b.length ? 1 : b[i - (n - b.length)];
    if (da === 1) out.push(db);
    else if (db === 1 || sameDim(da, db)) out.push(da);
    else throw new Error(`shapes ${shapeText(a)} and ${shapeText(b)} do not broadcast (axis ${i}: ${dimText(da)} vs ${dimText(db)})`);
  }
  return out;
}

function elementwise(inputs: readonly (InputInfo | null)[]): TensorType[] {
  const a = req(inputs[0], 'A');
  const b = req(inputs[1], 'B');
  need(a.dtype === b.dtype, `operands have different dtypes: ${typeText(a)} and ${typeText(b)}`);
  return [{ dtype: a.dtype, shape: broadcastShapes(a.shape, b.shape) }];
}

function same(inputs: readonly (InputInfo | null)[]): TensorType[] {
  const x = req(inputs[0], 'X');
  return [{ dtype: x.dtype, shape: x.shape }];
}

/** Output size of a sliding window along one axis (Conv, MaxPool, AveragePool). */
export function windowOut(size: Dim, k: number, stride: number, padBegin: number, padEnd: number, dilation: number, ceil = false): Dim {
  const span = dilation * (k - 1) + 1;
  const fn = (h: number): number => {
    const r = (h + padBegin + padEnd - span) / stride;
    return (ceil ? Math.ceil(r) : Math.floor(r)) + 1;
  };
  const text = (h: string): string => `${ceil ? 'ceil' : 'floor'}((${h}+${padBegin + padEnd - span})/${stride})+1`;
  if (stride === 1 && padBegin + padEnd - span + 1 === 0) return size;
  const out = mapDim(size, fn, text);
  if (typeof out === 'number') need(out >= 1, `window ${k} (stride ${stride}, pads ${padBegin}/${padEnd}) does not fit in size ${dimText(size)}`);
  return out;
}

function spatialWindow(x: InputInfo, kernel: readonly number[], a: AttrReader, ceil: boolean): Dim[] {
  const nsp = kernel.length;
  const strides = a.ints('strides', undefined) ?? new Array<number>(nsp).fill(1);
  const pads = a.ints('pads', undefined) ?? new Array<number>(2 * nsp).fill(0);
  const dil = a.ints('dilations', undefined) ?? new Array<number>(nsp).fill(1);
  need(strides.length === nsp && pads.length === 2 * nsp && dil.length === nsp, `strides/pads/dilations do not match a ${nsp}-d kernel`);
  return kernel.map((k, i) => windowOut(x.shape[2 + i], k, strides[i], pads[i], pads[i + nsp], dil[i], ceil));
}

const WINDOW_ATTRS = { kernel_shape: 'ints', strides: 'ints', pads: 'ints', dilations: 'ints', auto_pad: 'string' } as const;

export const OPS: Readonly<Record<string, OpDef>> = {
  Conv: {
    attrs: { ...WINDOW_ATTRS, group: 'int' },
    inputs: [2, 3],
    infer(inputs, a) {
      const x = req(inputs[0], 'X');
      const w = req(inputs[1], 'W');
      float(x, 'X');
      rank(x, 4, 'X');
      rank(w, 4, 'W');
      const group = a.int('group', 1);
      const [m, cg, kh, kw] = w.shape as number[];
      need(sameDim(x.shape[1], cg * group), `input has ${dimText(x.shape[1])} channels but the weight ${shapeText(w.shape)} expects ${cg * group}`);
      const kernel = a.ints('kernel_shape', undefined) ?? [kh, kw];
      need(kernel[0] === kh && kernel[1] === kw, `kernel_shape [${kernel.join(', ')}] does not match weight ${shapeText(w.shape)}`);
      const b = inputs[2];
      if (b) need(b.shape.length === 1 && sameDim(b.shape[0], m), `bias ${shapeText(b.shape)} must be [${m}]`);
      return [{ dtype: 'float32', shape: [x.shape[0], m, ...spatialWindow(x, kernel, a, false)] }];
    },
  },
  ConvTranspose: {
    attrs: { ...WINDOW_ATTRS, group: 'int', output_padding: 'ints', output_shape: 'ints' },
    inputs: [2, 3],
    infer(inputs, a) {
      const x = req(inputs[0], 'X');
      const w = req(inputs[1], 'W');
      rank(x, 4, 'X');
      const [c, m, kh, kw] = w.shape as number[];
      need(sameDim(x.shape[1], c), `input has ${dimText(x.shape[1])} channels, weight ${shapeText(w.shape)} expects ${c}`);
      const strides = a.ints('strides', [1, 1])!;
      const pads = a.ints('pads', [0, 0, 0, 0])!;
      const op = a.ints('output_padding', [0, 0])!;
      const k = [kh, kw];
      const sp = [0, 1].map((i) =>
        mapDim(
          x.shape[2 + i],
          (h) => strides[i] * (h - 1) + op[i] + k[i] - pads[i] - pads[i + 2],
          (h) => `${strides[i]}*(${h}-1)+${op[i] + k[i] - pads[i] - pads[i + 2]}`,
        ),
      );
      return [{ dtype: 'float32', shape: [x.shape[0], m * a.int('group', 1), ...sp] }];
    },
  },
  BatchNormalization: {
    attrs: { epsilon: 'float', momentum: 'float', training_mode: 'int' },
    inputs: [5, 5],
    infer(inputs, a) {
      const x = req(inputs[0], 'X');
      float(x, 'X');
      need(x.shape.length >= 2, `X must have rank >= 2, got ${typeText(x)}`);
      const c = x.shape[1];
      for (const [i, what] of [[1, 'scale'], [2, 'B'], [3, 'input_mean'], [4, 'input_var']] as const) {
        const p = req(inputs[i], what);
        need(p.shape.length === 1 && sameDim(p.shape[0], c), `${what} ${shapeText(p.shape)} must be [${dimText(c)}] to match X ${shapeText(x.shape)}`);
      }
      const y = { dtype: 'float32' as DType, shape: x.shape };
      if (a.int('training_mode', 0) === 0) return [y];
      const stat = { dtype: 'float32' as DType, shape: [c] };
      return [y, stat, stat];
    },
  },
  Relu: { attrs: {}, inputs: [1, 1], infer: same },
  Sigmoid: { attrs: {}, inputs: [1, 1], infer: same },
  Identity: { attrs: {}, inputs: [1, 1], infer: same },
  Neg: { attrs: {}, inputs: [1, 1], infer: same },
  Exp: { attrs: {}, inputs: [1, 1], infer: same },
  Sqrt: { attrs: {}, inputs: [1, 1], infer: same },
  Reciprocal: { attrs: {}, inputs: [1, 1], infer: same },
  Add: { attrs: {}, inputs: [2, 2], infer: elementwise },
  Sub: { attrs: {}, inputs: [2, 2], infer: elementwise },
  Mul: { attrs: {}, inputs: [2, 2], infer: elementwise },
  Div: { attrs: {}, inputs: [2, 2], infer: elementwise },
  Dropout: {
    attrs: { seed: 'int' },
    inputs: [1, 3],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      return [{ dtype: x.dtype, shape: x.shape }];
    },
  },
  MaxPool: {
    attrs: { ...WINDOW_ATTRS, ceil_mode: 'int', storage_order: 'int' },
    inputs: [1, 1],
    infer(inputs, a) {
      const x = req(inputs[0], 'X');
      rank(x, 4, 'X');
      const kernel = a.ints('kernel_shape', undefined);
      need(kernel !== undefined, 'kernel_shape is required');
      return [{ dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...spatialWindow(x, kernel, a, a.int('ceil_mode', 0) === 1)] }];
    },
  },
  AveragePool: {
    attrs: { ...WINDOW_ATTRS, ceil_mode: 'int', count_include_pad: 'int' },
    inputs: [1, 1],
    infer(inputs, a) {
      const x = req(inputs[0], 'X');
      rank(x, 4, 'X');
      const kernel = a.ints('kernel_shape', undefined);
      need(kernel !== undefined, 'kernel_shape is required');
      return [{ dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...spatialWindow(x, kernel, a, a.int('ceil_mode', 0) === 1)] }];
    },
  },
  GlobalAveragePool: {
    attrs: {},
    inputs: [1, 1],
    infer(inputs) {
      const x = req(inputs[0], 'X');
      need(x.shape.length >= 3, `X must have rank >= 3, got ${typeText(x)}`);
      return [{ dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...x.shape.slice(2).map(() => 1)] }];
    },
  },
  Flatten: {
    attrs: { axis: 'int' },
    inputs: [1, 1],
    infer(inputs, a) {
      const x = req(inputs[0], 'input');
      const axis = a.int('axis', 1);
      need(axis >= 0 && axis <= x.shape.length, `axis ${axis} out of range for ${typeText(x)}`);
      const prod = (dims: readonly Dim[]): Dim => {
        if (dims.length === 1) return dims[0];
        if (dims.every((d) => typeof d === 'number')) return (dims as number[]).reduce((p, d) => p * d, 1);
        const ds = dims.filter((d) => d !== 1);
        if (ds.length === 1) return ds[0];
        if (ds.length === 0) return 1;
        return { text: ds.map(dimText).join('*'), at: (env) => ds.reduce<number>((p, d) => p * (typeof d === 'number' ? d : d.at(env)), 1) };
      };
      return [{ dtype: x.dtype, shape: [prod(x.shape.slice(0, axis)), prod(x.shape.slice(axis))] }];
    },
  },
  Reshape: {
    attrs: { allowzero: 'int' },
    inputs: [2, 2],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      const target = concreteInt64(inputs[1], 'shape');
      const known = x.shape.every((d) => typeof d === 'number');
      const out: Dim[] = target.map((t, i) => (t === 0 ? x.shape[i] : t));
      const minus = out.findIndex((d) => d === -1);
      if (minus >= 0) {
        need(known, `Reshape with -1 needs a concrete input shape, got ${typeText(x)}`);
        const total = (x.shape as number[]).reduce((p, d) => p * d, 1);
        const rest = (out.filter((d, i) => i !== minus) as number[]).reduce((p, d) => p * d, 1);
        out[minus] = total / rest;
      }
      return [{ dtype: x.dtype, shape: out }];
    },
  },
  Transpose: {
    attrs: { perm: 'ints' },
    inputs: [1, 1],
    infer(inputs, a) {
      const x = req(inputs[0], 'data');
      const perm = a.ints('perm', undefined) ?? x.shape.map((_, i) => x.shape.length - 1 - i);
      need(perm.length === x.shape.length, `perm [${perm.join(', ')}] does not match rank ${x.shape.length}`);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }];
    },
  },
  Gemm: {
    attrs: { alpha: 'float', beta: 'float', transA: 'int', transB: 'int' },
    inputs: [2, 3],
    infer(inputs, a) {
      const x = req(inputs[0], 'A');
      const w = req(inputs[1], 'B');
      rank(x, 2, 'A');
      rank(w, 2, 'B');
      const [m, k] = a.int('transA', 0) ? [x.shape[1], x.shape[0]] : [x.shape[0], x.shape[1]];
      const [k2, n] = a.int('transB', 0) ? [w.shape[1], w.shape[0]] : [w.shape[0], w.shape[1]];
      need(sameDim(k, k2), `inner dimensions differ: A ${shapeText(x.shape)} has ${dimText(k)} features, B ${shapeText(w.shape)} expects ${dimText(k2)}`);
      const c = inputs[2];
      if (c) broadcastShapes([m, n], c.shape);
      return [{ dtype: 'float32', shape: [m, n] }];
    },
  },
  MatMul: {
    attrs: {},
    inputs: [2, 2],
    infer(inputs) {
      const x = req(inputs[0], 'A');
      const y = req(inputs[1], 'B');
      need(x.shape.length >= 2 && y.shape.length >= 2, `MatMul needs rank >= 2 operands, got ${typeText(x)} and ${typeText(y)}`);
      const k = x.shape[x.shape.length - 1];
      const k2 = y.shape[y.shape.length - 2];
      need(sameDim(k, k2), `inner dimensions differ: ${shapeText(x.shape)} x ${shapeText(y.shape)}`);
      const batch = broadcastShapes(x.shape.slice(0, -2), y.shape.slice(0, -2));
      return [{ dtype: x.dtype, shape: [...batch, x.shape[x.shape.length - 2], y.shape[y.shape.length - 1]] }];
    },
  },
  Pad: {
    attrs: { mode: 'string' },
    inputs: [2, 3],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      const pads = concreteInt64(inputs[1], 'pads');
      const r = x.shape.length;
      need(pads.length === 2 * r, `pads has ${pads.length} values, ${2 * r} needed for ${typeText(x)}`);
      const shape = x.shape.map((d, i) => {
        const p = pads[i] + pads[i + r];
        return p === 0 ? d : mapDim(d, (v) => v + p, (t) => `(${t}+${p})`);
      });
      return [{ dtype: x.dtype, shape }];
    },
  },
  Slice: {
    attrs: {},
    inputs: [3, 5],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      const starts = concreteInt64(inputs[1], 'starts');
      const ends = concreteInt64(inputs[2], 'ends');
      const axes = inputs[3] ? concreteInt64(inputs[3], 'axes') : starts.map((_, i) => i);
      const steps = inputs[4] ? concreteInt64(inputs[4], 'steps') : starts.map(() => 1);
      const shape = [...x.shape];
      axes.forEach((axisRaw, i) => {
        const axis = axisRaw < 0 ? axisRaw + x.shape.length : axisRaw;
        need(axis >= 0 && axis < x.shape.length, `axis ${axisRaw} out of range for ${typeText(x)}`);
        const step = steps[i];
        need(step > 0, 'only positive steps are supported');
        const len = (d: number): number => {
          const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
          return Math.max(0, Math.ceil((clamp(ends[i]) - clamp(starts[i])) / step));
        };
        shape[axis] = mapDim(x.shape[axis], len, (t) => `slice(${t},${starts[i]},${ends[i]},${step})`);
      });
      return [{ dtype: x.dtype, shape }];
    },
  },
  Concat: {
    attrs: { axis: 'int' },
    inputs: [1, 1 << 16],
    infer(inputs, a) {
      const xs = inputs.map((x, i) => req(x, `input ${i}`));
      const axis = a.int('axis', 0);
      const r = xs[0].shape.length;
      const ax = axis < 0 ? axis + r : axis;
      let total: Dim = 0;
      for (const x of xs) {
        need(x.shape.length === r && x.dtype === xs[0].dtype, `inputs differ in rank or dtype: ${typeText(xs[0])} vs ${typeText(x)}`);
        x.shape.forEach((d, i) => {
          if (i !== ax) need(sameDim(d, xs[0].shape[i]), `inputs differ on axis ${i}: ${shapeText(xs[0].shape)} vs ${shapeText(x.shape)}`);
        });
        const d = x.shape[ax];
        need(typeof d === 'number' && typeof total === 'number', `Concat along a symbolic axis is not supported (${typeText(x)})`);
        total = total + d;
      }
      const shape = [...xs[0].shape];
      shape[ax] = total;
      return [{ dtype: xs[0].dtype, shape }];
    },
  },
  Softmax: {
    attrs: { axis: 'int' },
    inputs: [1, 1],
    infer: same,
  },
  LogSoftmax: {
    attrs: { axis: 'int' },
    inputs: [1, 1],
    infer: same,
  },
  Constant: {
    attrs: { value: 'tensor' },
    inputs: [0, 0],
    infer(_inputs, a) {
      const t = a.tensor('value');
      need(t !== undefined, 'Constant needs a value');
      return [{ dtype: t.dtype, shape: t.dims }];
    },
  },
};
