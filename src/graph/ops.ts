// The ONNX operators the DSL can emit: each op's attribute schema and its type/shape inference, in one table.
// Adding an op (and, later, its gradient rule) touches this file only.

import type { GraphBuilder, Value } from './builder.js';
import { concrete, expand, f32, i64, oneHot, op, reduceSum, reshape, sumTo } from './grad-util.js';
import {
  type DType,
  type Dim,
  type Shape,
  type TensorData,
  type TensorType,
  ONNX_DTYPE,
  dimText,
  floatTensor,
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

/** What a gradient rule sees of the node it differentiates. */
export interface GradContext {
  readonly b: GraphBuilder;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  /** Gradient of the loss with respect to each output (null where none flows back). */
  readonly dOut: readonly (Value | null)[];
  readonly attrs: AttrReader;
  /** Whether the gradient of each input is wanted; a rule may return null for the others. */
  readonly need: readonly boolean[];
  /** The node's gradHint (see Node in graph.ts). */
  readonly hint?: 'batch-statistics';
}

/** What an expansion (OpDef.expand) sees: the node's inputs and attributes, and the names its outputs must get. */
export interface ExpandContext {
  readonly b: GraphBuilder;
  readonly inputs: readonly (Value | null)[];
  readonly attrs: AttrReader;
  /** Names the expansion's results must carry (one per requested output), e.g. via OpOptions.outputName. */
  readonly outputs: readonly string[];
}

export interface OpDef {
  /** Attribute names and kinds this op accepts; any other attribute is an error. */
  readonly attrs: Readonly<Record<string, AttrKind>>;
  /** Allowed input counts (inclusive). Optional inputs may be given as null. */
  readonly inputs: readonly [number, number];
  /** Output types; throws an Error whose message says what is wrong. */
  infer(inputs: readonly (InputInfo | null)[], attrs: AttrReader): TensorType[];
  /**
   * Reverse-mode rule: gradients of the loss with respect to the inputs, emitted as standard ONNX ops through
   * `b`. Absent for ops that are not differentiated (integer ops, constants).
   */
  grad?(c: GradContext): (Value | null)[];
  /**
   * A composite op: emits, through `b`, standard ops that compute the same outputs, and returns them; or returns
   * null (emitting nothing) to have the op written as itself. The graph then holds the expansion, while autodiff
   * still differentiates the op by `grad` (see Node.composite). Used where an op has no kernel on an execution
   * provider a build target must serve (see src/export/kernels.ts).
   */
  expand?(c: ExpandContext): Value[] | null;
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

/**
 * Training-mode BN backward (batch statistics), with xc = x - mean, inv = 1/sqrt(var + eps), n = N*H*W:
 *   dbeta = sum(dy), dgamma = inv * sum(dy * xc),
 *   dx = gamma*inv * (dy - dbeta/n - xc * inv^2 * sum(dy*xc)/n).
 * The per-channel affine maps are run as inference-form BatchNormalization (mean 0, variance 1 - eps): one
 * fused kernel each instead of a broadcast Mul and Add.
 */
function batchNormTrainingGrad(b: GraphBuilder, x: Value, gamma: Value, mean: Value, variance: Value, dy: Value, eps: number, need: readonly boolean[]): (Value | null)[] {
  const shape = concrete(x.shape, 'BatchNormalization grad');
  const c = shape[1];
  const n = shape.reduce((p, d, i) => (i === 1 ? p : p * d), 1);
  const perChannel = [1, c, ...shape.slice(2).map(() => 1)];
  const axes = shape.map((_, i) => i).filter((i) => i !== 1);
  const inv = op(b, 'Reciprocal', [op(b, 'Sqrt', [op(b, 'Add', [variance, f32(b, eps)])])]);
  const gInv = op(b, 'Mul', [gamma, inv]);
  const xc = op(b, 'Sub', [x, reshape(b, mean, perChannel)]);
  const sumDy = reduceSum(b, dy, axes, false, 'sum_dy');
  const sumDyXc = reduceSum(b, op(b, 'Mul', [dy, xc]), axes, false, 'sum_dy_xc');
  let dx: Value | null = null;
  if (need[0]) {
    const affine = (v: Value, scale: Value, bias: Value): Value => {
      const zero = b.constant(b.fresh('zero_mean'), floatTensor([c], new Float32Array(c)));
      const one = b.constant(b.fresh('unit_var'), floatTensor([c], new Float32Array(c).fill(1 - eps)));
      return b.op1('BatchNormalization', [v, scale, bias, zero, one], { epsilon: eps }, { name: b.fresh('affine') });
    };
    const scaleXc = op(b, 'Mul', [gInv, op(b, 'Mul', [op(b, 'Mul', [inv, inv]), op(b, 'Mul', [sumDyXc, f32(b, -1 / n)])])]);
    const shift = op(b, 'Mul', [gInv, op(b, 'Mul', [sumDy, f32(b, -1 / n)])]);
    const noBias = b.constant(b.fresh('no_bias'), floatTensor([c], new Float32Array(c)));
    dx = op(b, 'Add', [affine(dy, gInv, noBias), affine(xc, scaleXc, shift)]);
  }
  return [dx, need[1] ? op(b, 'Mul', [sumDyXc, inv]) : null, need[2] ? sumDy : null, null, null];
}

/**
 * dW of a Conv, dW[m, c, i, j] = sum over n, h, w of dY[n, m, h, w] * Xpad[n, c, s*h + i, s*w + j], by im2col
 * and one batched GEMM per layer, keeping X and dY in their NCHW layout. Measured per layer on the CIFAR shapes
 * (batch 128, 2 threads, scratch microbenchmarks of onnxruntime kernel time): 2-4x faster than the earlier one
 * GEMM [M, NH'W'] x [NH'W', C] per tap on NHWC slices, and than the Conv formulation (a conv with an H'xW'
 * kernel over the batch axis), which stays for large kernels (the 7x7 stem).
 */
function convWeightGrad(b: GraphBuilder, x: Value, dy: Value, kernel: number[], strides: readonly number[], pads: readonly number[]): Value {
  const [n, c, , w] = concrete(x.shape, 'Conv grad');
  const [, m, ho, wo] = concrete(dy.shape, 'Conv grad');
  const [kh, kw] = kernel;
  const t = (v: Value, perm: number[], name: string): Value => b.op1('Transpose', [v], { perm }, { name: b.fresh(name) });
  if (kh * kw > 9) {
    let z = b.op1('Conv', [t(x, [1, 0, 2, 3], 'x_t'), t(dy, [1, 0, 2, 3], 'dy_t')], { pads: [...pads], dilations: [...strides] }, { name: b.fresh('dw_conv') });
    const [, , zh, zw] = concrete(z.shape, 'Conv grad');
    if (zh !== kh || zw !== kw) z = b.op1('Slice', [z, i64(b, [0, 0]), i64(b, [kh, kw]), i64(b, [2, 3])], {}, { name: b.fresh('dw_crop') });
    return t(z, [1, 0, 2, 3], 'dw');
  }
  const pad = (v: Value, spec: number[], name: string): Value => (spec.some((p) => p !== 0) ? b.op1('Pad', [v, i64(b, spec)], { mode: 'constant' }, { name: b.fresh(name) }) : v);
  if (strides.every((st) => st === 1)) {
    // Wide rows: with X padded to [Hp, Wp] and flattened, tap (i, j) of output pixel q = h*Wp + w is element
    // q + i*Wp + j. Row offsets come from X: kh contiguous slices X_i = Xflat[i*Wp, i*Wp + Ho*Wp). Column
    // offsets come from dY: dY widened to rows of Wp (zeros in the kw-1 extra columns) and shifted right by j
    // in the flattened order, which only moves zeros across row ends. Then [dY_0; ..; dY_kw-1] x [X_0; ..]^T
    // per image gives all kh*kw taps, [kw*M, kh*C], with no short-run copies of the 9x im2col matrix.
    const xp = pad(x, [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], 'x_pad');
    const [, , hp, wp] = concrete(xp.shape, 'Conv grad');
    const k = ho * wp;
    const xFlat = reshape(b, xp, [n, c, hp * wp], 'x_flat');
    const rows = Array.from({ length: kh }, (_, i) => (kh === 1 ? xFlat : b.op1('Slice', [xFlat, i64(b, [i * wp]), i64(b, [i * wp + k]), i64(b, [2])], {}, { name: b.fresh('x_rows') })));
    const dyWide = reshape(b, pad(dy, [0, 0, 0, 0, 0, 0, 0, kw - 1], 'dy_wide'), [n, m, k], 'dy_flat');
    const cols = Array.from({ length: kw }, (_, j) => pad(dyWide, [0, 0, j, 0, 0, -j], 'dy_shift'));
    const cat = (vs: Value[], name: string): Value => (vs.length === 1 ? vs[0] : b.op1('Concat', vs, { axis: 1 }, { name: b.fresh(name) }));
    const prod = op(b, 'MatMul', [cat(cols, 'dy_cols'), t(cat(rows, 'x_cols'), [0, 2, 1], 'x_cols_t')]); // [N, kw*M, kh*C]
    return t(reshape(b, batchSum(b, prod), [kw, m, kh, c], 'dw_taps'), [1, 3, 2, 0], 'dw');
  }
  // Strided: per kernel offset one strided Slice of the padded X gives that tap's [H'W', C] matrix per image,
  // cut from X in NCHW when rows are long (W >= C: no transpose; Transpose + MatMul becomes one transposed GEMM
  // in onnxruntime), else from X transposed once to NHWC (long channel runs).
  const dyRows = reshape(b, dy, [n, m, ho * wo], 'dy_rows');
  const nchw = w >= c;
  // Spatial axes of the layout the taps are cut from, and X padded in it.
  const [ah, aw] = nchw ? [2, 3] : [1, 2];
  const spec = new Array<number>(8).fill(0);
  [spec[ah], spec[aw], spec[ah + 4], spec[aw + 4]] = pads;
  const xs = pad(nchw ? x : t(x, [0, 2, 3, 1], 'x_nhwc'), spec, 'x_pad');
  const taps: Value[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const [eh, ew] = [i + strides[0] * (ho - 1) + 1, j + strides[1] * (wo - 1) + 1];
      taps.push(b.op1('Slice', [xs, i64(b, [i, j]), i64(b, [eh, ew]), i64(b, [ah, aw]), i64(b, [...strides])], {}, { name: b.fresh('x_tap') }));
    }
  }
  let perImage: Value; // [N, M, taps*C], tap-major
  if (nchw) {
    const cols = taps.length === 1 ? taps[0] : b.op1('Concat', taps, { axis: 1 }, { name: b.fresh('cols') });
    perImage = op(b, 'MatMul', [dyRows, t(reshape(b, cols, [n, taps.length * c, ho * wo], 'cols_rows'), [0, 2, 1], 'cols_t')]);
  } else {
    const products = taps.map((tap) => op(b, 'MatMul', [dyRows, reshape(b, tap, [n, ho * wo, c], 'tap_rows')]));
    perImage = products.length === 1 ? products[0] : b.op1('Concat', products, { axis: 2 }, { name: b.fresh('taps') });
  }
  const summed = batchSum(b, perImage);
  if (kh * kw === 1) return reshape(b, summed, [m, c, 1, 1], 'dw');
  return t(reshape(b, summed, [m, kh, kw, c], 'dw_taps'), [0, 3, 1, 2], 'dw');
}

/** Sum over the leading (batch) axis as a [1, N] x [N, rest] GEMV: twice as fast here as ReduceSum over axis 0. */
function batchSum(b: GraphBuilder, v: Value): Value {
  const [n, ...rest] = concrete(v.shape, 'batch sum');
  const ones = b.constant(b.fresh('ones'), floatTensor([1, n], new Float32Array(n).fill(1)));
  return op(b, 'MatMul', [ones, reshape(b, v, [n, rest.reduce((p, d) => p * d, 1)], 'per_image')]);
}

/**
 * MaxPool's gradient without indices: for each kernel tap (p, q), in the scan order onnxruntime and PyTorch use,
 * the window's value at that tap (a strided slice of X padded with -inf) is its first maximum when it equals the
 * pooled Y and no earlier tap did; dY masked so is put back at the tap's input positions by a depthwise
 * ConvTranspose whose kernel is 1 at (p, q) only. Overlapping windows add up, as the scatter-add does.
 */
function maxPoolGradByWindows(b: GraphBuilder, x: Value, y: Value, dy: Value, attrs: AttrReader): Value {
  const [, c, h, w] = concrete(x.shape, 'MaxPool grad');
  const [, , ho, wo] = concrete(y.shape, 'MaxPool grad');
  const [kh, kw] = attrs.ints('kernel_shape', undefined)!;
  const [sh, sw] = attrs.ints('strides', undefined) ?? [1, 1];
  const pads = attrs.ints('pads', undefined) ?? [0, 0, 0, 0];
  ensure((attrs.ints('dilations', undefined) ?? [1, 1]).every((d) => d === 1), 'dilated MaxPool has no gradient rule');
  ensure(attrs.string('auto_pad', 'NOTSET') === 'NOTSET', 'MaxPool grad needs explicit pads');
  // Pad so that every window lies inside; ConvTranspose's end pads (or output_padding) make its output H x W.
  const endH = Math.max(0, (ho - 1) * sh + kh - pads[0] - h);
  const endW = Math.max(0, (wo - 1) * sw + kw - pads[1] - w);
  const minusInf = b.constant(b.fresh('minus_inf'), floatTensor([], Float32Array.of(-Infinity)));
  const xp = b.op1('Pad', [x, i64(b, [0, 0, pads[0], pads[1], 0, 0, endH, endW], 'pads'), minusInf], { mode: 'constant' }, { name: b.fresh('x_pad') });
  const fit = (size: number, stride: number, k: number, begin: number, out: number): { end: number; extra: number } => {
    const base = stride * (out - 1) + k - begin;
    return base >= size ? { end: base - size, extra: 0 } : { end: 0, extra: size - base };
  };
  const fh = fit(h, sh, kh, pads[0], ho);
  const fw = fit(w, sw, kw, pads[1], wo);
  let remaining: Value | null = null;
  let dx: Value | null = null;
  for (let p = 0; p < kh; p++) {
    for (let q = 0; q < kw; q++) {
      const tap = b.op1('Slice', [xp, i64(b, [p, q], 'starts'), i64(b, [p + (ho - 1) * sh + 1, q + (wo - 1) * sw + 1], 'ends'), i64(b, [2, 3], 'axes'), i64(b, [sh, sw], 'steps')], {}, { name: b.fresh('tap') });
      const hit = b.op1('Cast', [op(b, 'Equal', [tap, y])], { to: ONNX_DTYPE.float32 }, { name: b.fresh('hit') });
      const first: Value = remaining ? op(b, 'Mul', [hit, remaining]) : hit;
      if (p * kw + q < kh * kw - 1) remaining = remaining ? op(b, 'Sub', [remaining, first]) : op(b, 'Sub', [f32(b, 1), first]);
      const kernel = new Float32Array(c * kh * kw);
      for (let ch = 0; ch < c; ch++) kernel[ch * kh * kw + p * kw + q] = 1;
      const place = b.constant(b.fresh('tap_kernel'), floatTensor([c, 1, kh, kw], kernel));
      const back = b.op1('ConvTranspose', [op(b, 'Mul', [dy, first]), place], { kernel_shape: [kh, kw], strides: [sh, sw], pads: [pads[0], pads[1], fh.end, fw.end], output_padding: [fh.extra, fw.extra], group: c }, { name: b.fresh('put_back') });
      dx = dx ? op(b, 'Add', [dx, back]) : back;
    }
  }
  return dx!;
}

/** need() under another name, for gradient rules, whose context calls its own field `need`. */
const ensure: (cond: boolean, message: string) => asserts cond = need;

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

/** Elementwise comparisons (Equal, Greater): broadcast like Add, bool out, no gradient. */
const COMPARISON: OpDef = {
  attrs: {},
  inputs: [2, 2],
  infer(inputs) {
    const [t] = elementwise(inputs);
    return [{ dtype: 'bool', shape: t.shape }];
  },
};

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
    grad({ b, inputs: [x, w, bias], dOut: [dy], attrs, need }) {
      ensure(attrs.int('group', 1) === 1, 'grouped convolutions have no gradient rule yet');
      const [, , kh, kw] = concrete(w!.shape, 'Conv grad');
      const [, , h, wd] = concrete(x!.shape, 'Conv grad');
      const strides = attrs.ints('strides', [1, 1])!;
      const pads = attrs.ints('pads', [0, 0, 0, 0])!;
      ensure((attrs.ints('dilations', [1, 1]) ?? [1, 1]).every((d) => d === 1), 'dilated convolutions have no gradient rule yet');
      let dx: Value | null = null;
      if (need[0]) {
        if (strides.every((st) => st === 1) && pads[0] <= kh - 1 && pads[1] <= kw - 1 && pads[2] <= kh - 1 && pads[3] <= kw - 1) {
          // Stride 1: a plain Conv of dY with W flipped spatially and its first two axes swapped (fast NCHWc path).
          const swapped = b.op1('Transpose', [w!], { perm: [1, 0, 2, 3] }, { name: b.fresh('w_t') });
          const big = Number.MAX_SAFE_INTEGER;
          const flipped = b.op1('Slice', [swapped, i64(b, [-1, -1]), i64(b, [-big, -big]), i64(b, [2, 3]), i64(b, [-1, -1])], {}, { name: b.fresh('w_flip') });
          dx = b.op1('Conv', [dy!, flipped], { kernel_shape: [kh, kw], pads: [kh - 1 - pads[0], kw - 1 - pads[1], kh - 1 - pads[2], kw - 1 - pads[3]] }, { name: b.fresh('dx') });
        } else {
          const outPad = [(h + pads[0] + pads[2] - kh) % strides[0], (wd + pads[1] + pads[3] - kw) % strides[1]];
          dx = b.op1('ConvTranspose', [dy!, w!], { kernel_shape: [kh, kw], strides: [...strides], pads: [...pads], output_padding: outPad }, { name: b.fresh('dx') });
        }
      }
      const dw = need[1] ? convWeightGrad(b, x!, dy!, [kh, kw], strides, pads) : null;
      const db = need[2] && bias ? reduceSum(b, dy!, [0, 2, 3], false, 'db') : null;
      return [dx, dw, db];
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
    // Inference-form BN, y = (x - mean) / sqrt(var + eps) * scale + B, differentiated in all five inputs; or
    // training-mode BN in closed form, either as the op in training mode (with momentum 0 its mean and variance
    // outputs are exactly the batch statistics it normalised with), or as the inference-form op fed with its own
    // input's batch statistics (hint 'batch-statistics').
    grad({ b, inputs: [x, gamma, , mean, variance], outputs, dOut: [dy, dMeanOut, dVarOut], attrs, need, hint }) {
      const eps = attrs.float('epsilon', 1e-5);
      if (attrs.int('training_mode', 0) === 1) {
        ensure(attrs.float('momentum', 0.9) === 0, 'training-mode BatchNormalization is differentiated with momentum 0 (its outputs are then the batch statistics)');
        ensure(!dMeanOut && !dVarOut, 'the loss must not depend on the batch statistics outputs of training-mode BatchNormalization');
        return batchNormTrainingGrad(b, x!, gamma!, outputs[1], outputs[2], dy!, eps, need);
      }
      if (hint === 'batch-statistics') return batchNormTrainingGrad(b, x!, gamma!, mean!, variance!, dy!, eps, need);
      const shape = concrete(x!.shape, 'BatchNormalization grad');
      const c = shape[1];
      const perChannel = [1, c, ...shape.slice(2).map(() => 1)];
      const axes = shape.map((_, i) => i).filter((i) => i !== 1);
      const inv = op(b, 'Reciprocal', [op(b, 'Sqrt', [op(b, 'Add', [variance!, f32(b, attrs.float('epsilon', 1e-5))])])]);
      const gInv = op(b, 'Mul', [gamma!, inv]);
      const dx = need[0] ? op(b, 'Mul', [dy!, reshape(b, gInv, perChannel)]) : null;
      const sumDy = need[2] || need[3] ? reduceSum(b, dy!, axes, false, 'sum_dy') : null;
      let sumDyXc: Value | null = null;
      if (need[1] || need[4]) {
        const xc = op(b, 'Sub', [x!, reshape(b, mean!, perChannel)]);
        sumDyXc = reduceSum(b, op(b, 'Mul', [dy!, xc]), axes, false, 'sum_dy_xc');
      }
      const dGamma = need[1] ? op(b, 'Mul', [sumDyXc!, inv]) : null;
      const dMean = need[3] ? op(b, 'Neg', [op(b, 'Mul', [sumDy!, gInv])]) : null;
      const dVar = need[4] ? op(b, 'Mul', [sumDyXc!, op(b, 'Mul', [gInv, op(b, 'Mul', [op(b, 'Mul', [inv, inv]), f32(b, -0.5)])])]) : null;
      return [dx, dGamma, need[2] ? sumDy : null, dMean, dVar];
    },
  },
  Relu: {
    attrs: {},
    inputs: [1, 1],
    infer: same,
    // dX = dY where y > 0 (x > 0), else 0: a Greater mask cast to float (twice as fast here as Sign(y), the
    // earlier mask, and faster than Where).
    grad: ({ b, outputs: [y], dOut: [dy] }) => [op(b, 'Mul', [dy!, b.op1('Cast', [op(b, 'Greater', [y, f32(b, 0)])], { to: ONNX_DTYPE.float32 }, { name: b.fresh('mask') })])],
  },
  Sign: { attrs: {}, inputs: [1, 1], infer: same },
  Sigmoid: {
    attrs: {},
    inputs: [1, 1],
    infer: same,
    grad: ({ b, outputs: [y], dOut: [dy] }) => [op(b, 'Mul', [dy!, op(b, 'Mul', [y, op(b, 'Sub', [f32(b, 1), y])])])],
  },
  Identity: { attrs: {}, inputs: [1, 1], infer: same, grad: ({ dOut: [dy] }) => [dy] },
  Neg: { attrs: {}, inputs: [1, 1], infer: same, grad: ({ b, dOut: [dy] }) => [op(b, 'Neg', [dy!])] },
  Exp: { attrs: {}, inputs: [1, 1], infer: same, grad: ({ b, outputs: [y], dOut: [dy] }) => [op(b, 'Mul', [dy!, y])] },
  Log: { attrs: {}, inputs: [1, 1], infer: same, grad: ({ b, inputs: [x], dOut: [dy] }) => [op(b, 'Div', [dy!, x!])] },
  Gather: {
    attrs: { axis: 'int' },
    inputs: [2, 2],
    infer(inputs, a) {
      const x = req(inputs[0], 'data');
      const idx = req(inputs[1], 'indices');
      need(idx.dtype === 'int64', `indices must be int64, got ${typeText(idx)}`);
      const r = x.shape.length;
      const axis = a.int('axis', 0);
      const ax = axis < 0 ? axis + r : axis;
      need(ax >= 0 && ax < r, `axis ${axis} out of range for ${typeText(x)}`);
      return [{ dtype: x.dtype, shape: [...x.shape.slice(0, ax), ...idx.shape, ...x.shape.slice(ax + 1)] }];
    },
  },
  GatherElements: {
    attrs: { axis: 'int' },
    inputs: [2, 2],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      const idx = req(inputs[1], 'indices');
      need(idx.dtype === 'int64' && idx.shape.length === x.shape.length, `indices must be int64 of the data's rank, got ${typeText(idx)} for ${typeText(x)}`);
      return [{ dtype: x.dtype, shape: idx.shape }];
    },
  },
  Sqrt: {
    attrs: {},
    inputs: [1, 1],
    infer: same,
    grad: ({ b, outputs: [y], dOut: [dy] }) => [op(b, 'Div', [op(b, 'Mul', [dy!, f32(b, 0.5)]), y])],
  },
  Reciprocal: {
    attrs: {},
    inputs: [1, 1],
    infer: same,
    grad: ({ b, outputs: [y], dOut: [dy] }) => [op(b, 'Neg', [op(b, 'Mul', [dy!, op(b, 'Mul', [y, y])])])],
  },
  Add: {
    attrs: {},
    inputs: [2, 2],
    infer: elementwise,
    grad: ({ b, inputs: [x, y], dOut: [dz], need }) => [need[0] ? sumTo(b, dz!, x!.shape) : null, need[1] ? sumTo(b, dz!, y!.shape) : null],
  },
  Sub: {
    attrs: {},
    inputs: [2, 2],
    infer: elementwise,
    grad: ({ b, inputs: [x, y], dOut: [dz], need }) => [
      need[0] ? sumTo(b, dz!, x!.shape) : null,
      need[1] ? sumTo(b, op(b, 'Neg', [dz!]), y!.shape) : null,
    ],
  },
  Mul: {
    attrs: {},
    inputs: [2, 2],
    infer: elementwise,
    grad: ({ b, inputs: [x, y], dOut: [dz], need }) => [
      need[0] ? sumTo(b, op(b, 'Mul', [dz!, y!]), x!.shape) : null,
      need[1] ? sumTo(b, op(b, 'Mul', [dz!, x!]), y!.shape) : null,
    ],
  },
  Div: {
    attrs: {},
    inputs: [2, 2],
    infer: elementwise,
    grad: ({ b, inputs: [x, y], outputs: [z], dOut: [dz], need }) => [
      need[0] ? sumTo(b, op(b, 'Div', [dz!, y!]), x!.shape) : null,
      need[1] ? sumTo(b, op(b, 'Neg', [op(b, 'Div', [op(b, 'Mul', [dz!, z]), y!])]), y!.shape) : null,
    ],
  },
  ReduceSum: {
    attrs: { keepdims: 'int', noop_with_empty_axes: 'int' },
    inputs: [1, 2],
    infer(inputs, a) {
      const x = req(inputs[0], 'data');
      const axes = inputs[1] ? concreteInt64(inputs[1], 'axes').map((ax) => (ax < 0 ? ax + x.shape.length : ax)) : x.shape.map((_, i) => i);
      const keep = a.int('keepdims', 1) === 1;
      const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
      return [{ dtype: x.dtype, shape }];
    },
    grad({ b, inputs: [x, axesIn], dOut: [dy], attrs }) {
      const r = x!.shape.length;
      const axes = axesIn ? concreteInt64(axesIn, 'axes').map((ax) => (ax < 0 ? ax + r : ax)) : x!.shape.map((_, i) => i);
      const keptShape = x!.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const kept = attrs.int('keepdims', 1) === 1 ? dy! : reshape(b, dy!, concrete(keptShape, 'ReduceSum grad'));
      return [expand(b, kept, x!.shape), null];
    },
  },
  Expand: {
    attrs: {},
    inputs: [2, 2],
    infer(inputs) {
      const x = req(inputs[0], 'input');
      const shape = concreteInt64(inputs[1], 'shape');
      return [{ dtype: x.dtype, shape: broadcastShapes(x.shape, shape) }];
    },
    grad: ({ b, inputs: [x], dOut: [dy] }) => [sumTo(b, dy!, x!.shape), null],
  },
  Cast: {
    attrs: { to: 'int' },
    inputs: [1, 1],
    infer(inputs, a) {
      const x = req(inputs[0], 'input');
      const to = a.int('to', 1);
      const dtype = Object.entries(ONNX_DTYPE).find(([, code]) => code === to)?.[0] as DType | undefined;
      need(dtype !== undefined, `Cast to ONNX type ${to} is not supported`);
      return [{ dtype, shape: x.shape }];
    },
  },
  Equal: COMPARISON,
  Greater: COMPARISON,
  ArgMax: {
    attrs: { axis: 'int', keepdims: 'int', select_last_index: 'int' },
    inputs: [1, 1],
    infer(inputs, a) {
      const x = req(inputs[0], 'data');
      const axis = a.int('axis', 0);
      const ax = axis < 0 ? axis + x.shape.length : axis;
      const shape = a.int('keepdims', 1) === 1 ? x.shape.map((d, i) => (i === ax ? 1 : d)) : x.shape.filter((_, i) => i !== ax);
      return [{ dtype: 'int64', shape }];
    },
  },
  OneHot: {
    attrs: { axis: 'int' },
    inputs: [3, 3],
    infer(inputs, a) {
      const idx = req(inputs[0], 'indices');
      const depth = concreteInt64(inputs[1], 'depth');
      const values = req(inputs[2], 'values');
      need(a.int('axis', -1) === -1, 'only axis -1 is supported');
      return [{ dtype: values.dtype, shape: [...idx.shape, depth[0]] }];
    },
  },
  ConstantOfShape: {
    attrs: { value: 'tensor' },
    inputs: [1, 1],
    infer(inputs, a) {
      const shape = concreteInt64(inputs[0], 'input');
      return [{ dtype: a.tensor('value')?.dtype ?? 'float32', shape }];
    },
  },
  ScatterElements: {
    attrs: { axis: 'int', reduction: 'string' },
    inputs: [3, 3],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      return [{ dtype: x.dtype, shape: x.shape }];
    },
  },
  SoftmaxCrossEntropyLoss: {
    attrs: { reduction: 'string', ignore_index: 'int' },
    inputs: [2, 3],
    infer(inputs, a) {
      const scores = req(inputs[0], 'scores');
      const labels = req(inputs[1], 'labels');
      rank(scores, 2, 'scores');
      need(labels.dtype === 'int64' && labels.shape.length === 1 && sameDim(labels.shape[0], scores.shape[0]), `labels must be int64 [${dimText(scores.shape[0])}], got ${typeText(labels)}`);
      need(a.string('reduction', 'mean') === 'mean', "only reduction 'mean' is supported");
      return [{ dtype: 'float32', shape: [] }, { dtype: 'float32', shape: scores.shape }];
    },
    // d(mean cross-entropy)/d(scores) = (softmax(scores) - onehot(labels)) / N.
    grad({ b, inputs: [scores, labels], outputs, dOut: [dLoss] }) {
      const [n, classes] = concrete(scores!.shape, 'SoftmaxCrossEntropyLoss grad');
      const logProb = outputs[1];
      need(logProb !== undefined, 'the gradient needs the log_prob output: build the loss with 2 outputs');
      const diff = op(b, 'Sub', [op(b, 'Exp', [logProb]), oneHot(b, labels!, classes)]);
      return [op(b, 'Mul', [diff, op(b, 'Mul', [dLoss!, f32(b, 1 / n)])]), null, null];
    },
    // No onnxruntime provider has a kernel for this op: onnxruntime inlines the ONNX function (LogSoftmax, then
    // NegativeLogLikelihoodLoss), whose LogSoftmax onnxruntime-web's WebGPU lacks. For target 'any' it is spelled
    // out here with ops every provider has: log_prob = z - log(sum(exp(z))) with z = scores - max (the max via
    // ArgMax and GatherElements: ReduceMax's opset-20 schema has no WebGPU kernel), loss = -sum(log_prob[label]) / N.
    expand({ b, inputs: [scores, labels], outputs }) {
      if (b.target === 'onnxruntime-cpu') return null;
      const [n, classes] = concrete(scores!.shape, 'SoftmaxCrossEntropyLoss');
      const top = b.op1('ArgMax', [scores], { axis: 1, keepdims: 1 }, { name: 'argmax' });
      const max = b.op1('GatherElements', [scores, top], { axis: 1 }, { name: 'max' });
      const z = b.op1('Sub', [scores, max], {}, { name: 'shifted' });
      const sumExp = b.op1('ReduceSum', [b.op1('Exp', [z], {}, { name: 'exp' }), i64(b, [1], 'axes')], { keepdims: 1 }, { name: 'sum_exp' });
      const logProb = b.op1('Sub', [z, b.op1('Log', [sumExp], {}, { name: 'log_sum_exp' })], {}, { name: 'log_prob', ...(outputs[1] ? { outputName: outputs[1] } : {}) });
      const picked = b.op1('ReduceSum', [b.op1('Mul', [oneHot(b, labels!, classes), logProb], {}, { name: 'masked' }), i64(b, [1], 'class_axis')], { keepdims: 0 }, { name: 'picked' });
      const total = b.op1('ReduceSum', [picked], { keepdims: 0 }, { name: 'total' });
      const loss = b.op1('Div', [b.op1('Neg', [total], {}, { name: 'negated' }), b.constant(b.fresh('batch'), floatTensor([], Float32Array.of(n)))], {}, { name: 'mean', outputName: outputs[0] });
      return outputs.length > 1 ? [loss, logProb] : [loss];
    },
  },
  Dropout: {
    attrs: { seed: 'int' },
    inputs: [1, 3],
    infer(inputs) {
      const x = req(inputs[0], 'data');
      return [{ dtype: x.dtype, shape: x.shape }, { dtype: 'bool', shape: x.shape }];
    },
    // Training mode (third input true) has a second output, the mask; the rule scales by it as the forward did.
    grad({ b, inputs: [, ratio], outputs, dOut: [dy] }) {
      const mask = outputs[1];
      need(mask !== undefined, 'the gradient of Dropout needs its mask output (build it with 2 outputs in training mode)');
      const r = ratio?.constant ? (ratio.constant.values() as Float32Array)[0] : 0.5;
      const maskF = b.op1('Cast', [mask], { to: ONNX_DTYPE.float32 }, { name: b.fresh('mask_f') });
      return [op(b, 'Mul', [dy!, op(b, 'Mul', [maskF, f32(b, 1 / (1 - r))])]), null, null];
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
      const shape = [x.shape[0], x.shape[1], ...spatialWindow(x, kernel, a, a.int('ceil_mode', 0) === 1)];
      return [{ dtype: x.dtype, shape }, { dtype: 'int64', shape }];
    },
    // dY goes to the first maximum of each window in scan order (as onnxruntime's indices and PyTorch pick it).
    // Target 'onnxruntime-cpu': recompute the pooling with indices, then scatter-add dY to them. Target 'any':
    // without indices, ConstantOfShape or ScatterElements, which onnxruntime's WebGPU provider lacks (see
    // maxPoolGradByWindows).
    grad({ b, inputs: [x], outputs: [y], dOut: [dy], attrs }) {
      if (b.target !== 'onnxruntime-cpu') return [maxPoolGradByWindows(b, x!, y, dy!, attrs)];
      const shape = concrete(x!.shape, 'MaxPool grad');
      const keep: Record<string, RawAttr> = {};
      for (const k of ['kernel_shape', 'strides', 'pads', 'dilations'] as const) {
        const v = attrs.ints(k, undefined);
        if (v) keep[k] = v;
      }
      keep.ceil_mode = attrs.int('ceil_mode', 0);
      const [, indices] = b.op('MaxPool', [x!], keep, { name: b.fresh('pool_idx'), outputs: 2 });
      const total = shape.reduce((p, d) => p * d, 1);
      const zeros = b.op1('ConstantOfShape', [i64(b, [total])], { value: floatTensor([1], Float32Array.of(0)) }, { name: b.fresh('zeros') });
      const flatIdx = reshape(b, indices, [-1]);
      const flatDy = reshape(b, dy!, [-1]);
      const scattered = b.op1('ScatterElements', [zeros, flatIdx, flatDy], { axis: 0, reduction: 'add' }, { name: b.fresh('scatter') });
      return [reshape(b, scattered, shape)];
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
    grad({ b, inputs: [x], dOut: [dy] }) {
      const shape = concrete(x!.shape, 'GlobalAveragePool grad');
      const area = shape.slice(2).reduce((p, d) => p * d, 1);
      return [expand(b, op(b, 'Mul', [dy!, f32(b, 1 / area)]), shape)];
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
    grad: ({ b, inputs: [x], dOut: [dy] }) => [reshape(b, dy!, concrete(x!.shape, 'Flatten grad'))],
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
    grad: ({ b, inputs: [x], dOut: [dy] }) => [reshape(b, dy!, concrete(x!.shape, 'Reshape grad')), null],
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
    grad({ b, inputs: [x], dOut: [dy], attrs }) {
      const r = x!.shape.length;
      const perm = attrs.ints('perm', undefined) ?? x!.shape.map((_, i) => r - 1 - i);
      const inverse = perm.map((_, i) => perm.indexOf(i));
      return [b.op1('Transpose', [dy!], { perm: inverse }, { name: b.fresh('transpose') })];
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
    grad({ b, inputs: [x, w, c], dOut: [dy], attrs, need }) {
      ensure(attrs.float('alpha', 1) === 1 && attrs.float('beta', 1) === 1 && attrs.int('transA', 0) === 0, 'Gemm grad supports alpha = beta = 1, transA = 0');
      const tb = attrs.int('transB', 0) === 1;
      const dx = need[0] ? b.op1('Gemm', [dy!, w!], { transB: tb ? 0 : 1 }, { name: b.fresh('dx') }) : null;
      // Y = X W^T: dW = dY^T X; Y = X W: dW = X^T dY.
      const dw = need[1] ? (tb ? b.op1('Gemm', [dy!, x!], { transA: 1 }, { name: b.fresh('dw') }) : b.op1('Gemm', [x!, dy!], { transA: 1 }, { name: b.fresh('dw') })) : null;
      const dc = need[2] && c ? sumTo(b, dy!, c.shape) : null;
      return [dx, dw, dc];
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
    grad({ b, inputs: [x, y], dOut: [dz], need }) {
      ensure(x!.shape.length === 2 && y!.shape.length === 2, 'MatMul grad supports 2-d operands');
      const t = (v: Value): Value => b.op1('Transpose', [v], { perm: [1, 0] }, { name: b.fresh('t') });
      return [need[0] ? op(b, 'MatMul', [dz!, t(y!)]) : null, need[1] ? op(b, 'MatMul', [t(x!), dz!]) : null];
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
    grad({ b, inputs: [x, padsIn], dOut: [dy], attrs }) {
      need(attrs.string('mode', 'constant') === 'constant', 'only constant padding has a gradient rule');
      const shape = concrete(x!.shape, 'Pad grad');
      const pads = concreteInt64(padsIn!, 'pads');
      need(pads.every((p) => p >= 0), 'negative pads have no gradient rule');
      const axes = shape.map((_, i) => i);
      const starts = axes.map((i) => pads[i]);
      const ends = axes.map((i) => pads[i] + shape[i]);
      return [b.op1('Slice', [dy!, i64(b, starts), i64(b, ends), i64(b, axes)], {}, { name: b.fresh('unpad') }), null, null];
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
        need(step !== 0, 'steps must not be 0');
        // ONNX clamps starts/ends to [0, d] for positive steps and to [-1, d-1] for negative ones.
        const len = (d: number): number => {
          const [lo, hi] = step > 0 ? [0, d] : [-1, d - 1];
          const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + d : v, lo), hi);
          return Math.max(0, Math.ceil((clamp(ends[i]) - clamp(starts[i])) / step));
        };
        shape[axis] = mapDim(x.shape[axis], len, (t) => `slice(${t},${starts[i]},${ends[i]},${step})`);
      });
      return [{ dtype: x.dtype, shape }];
    },
    // Puts dY back where the slice took it from: zeros interleaved for steps > 1, then zero padding around.
    // The slice's length on each axis is dY's, so only starts and steps are needed. Strided spatial axes of an
    // NCHW tensor (the option-A shortcut's subsample) interleave with one depthwise ConvTranspose of a 1x1 kernel
    // of ones, 10x faster here than Pad on a size-1 inner axis, which stays for other axes.
    grad({ b, inputs: [x, startsIn, , axesIn, stepsIn], dOut: [dy] }) {
      const shape = concrete(x!.shape, 'Slice grad');
      const starts = concreteInt64(startsIn!, 'starts');
      const axes = (axesIn ? concreteInt64(axesIn, 'axes') : starts.map((_, i) => i)).map((a) => (a < 0 ? a + shape.length : a));
      const steps = stepsIn ? concreteInt64(stepsIn, 'steps') : starts.map(() => 1);
      need(steps.every((st) => st > 0), 'Slice grad supports positive steps');
      let g = dy!;
      const strided = axes.filter((_, k) => steps[k] > 1);
      const spatial = shape.length === 4 && strided.length > 0 && strided.every((a) => a >= 2);
      if (spatial) {
        const c = concrete(g.shape, 'Slice grad')[1];
        const st = [2, 3].map((a) => steps[axes.indexOf(a)] ?? 1);
        const ones = b.constant(b.fresh('ones'), floatTensor([c, 1, 1, 1], new Float32Array(c).fill(1)));
        g = b.op1('ConvTranspose', [g, ones], { kernel_shape: [1, 1], strides: st, group: c }, { name: b.fresh('interleave') });
      }
      axes.forEach((axis, k) => {
        const d = shape[axis];
        const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
        const start = clamp(starts[k]);
        const step = steps[k];
        const gShape = concrete(g.shape, 'Slice grad');
        if (step > 1 && !spatial) {
          const split = [...gShape.slice(0, axis + 1), 1, ...gShape.slice(axis + 1)];
          const padSpec = split.map(() => 0).concat(split.map((_, i) => (i === axis + 1 ? step - 1 : 0)));
          const padded = b.op1('Pad', [reshape(b, g, split), i64(b, padSpec)], { mode: 'constant' }, { name: b.fresh('interleave') });
          g = reshape(b, padded, gShape.map((v, i) => (i === axis ? v * step : v)));
        }
        const spread = concrete(g.shape, 'Slice grad')[axis];
        const after = d - start - spread;
        if (after < 0) {
          g = b.op1('Slice', [g, i64(b, [0]), i64(b, [spread + after]), i64(b, [axis])], {}, { name: b.fresh('trim') });
        }
        const cur = concrete(g.shape, 'Slice grad');
        const padSpec = cur.map(() => 0).concat(cur.map(() => 0));
        padSpec[axis] = start;
        padSpec[axis + cur.length] = Math.max(after, 0);
        if (start > 0 || after > 0) g = b.op1('Pad', [g, i64(b, padSpec)], { mode: 'constant' }, { name: b.fresh('unslice') });
      });
      return [g, null, null, null, null];
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
    grad({ b, inputs, dOut: [dy], attrs, need }) {
      const r = inputs[0]!.shape.length;
      const axis = ((attrs.int('axis', 0) % r) + r) % r;
      let offset = 0;
      return inputs.map((x, i) => {
        const len = x!.shape[axis] as number;
        const g = need[i] ? b.op1('Slice', [dy!, i64(b, [offset]), i64(b, [offset + len]), i64(b, [axis])], {}, { name: b.fresh('split') }) : null;
        offset += len;
        return g;
      });
    },
  },
  Softmax: {
    attrs: { axis: 'int' },
    inputs: [1, 1],
    infer: same,
    grad({ b, outputs: [y], dOut: [dy], attrs }) {
      const axis = attrs.int('axis', -1);
      const dot = b.op1('ReduceSum', [op(b, 'Mul', [dy!, y]), i64(b, [axis])], { keepdims: 1 }, { name: b.fresh('dot') });
      return [op(b, 'Mul', [y, op(b, 'Sub', [dy!, dot])])];
    },
  },
  LogSoftmax: {
    attrs: { axis: 'int' },
    inputs: [1, 1],
    infer: same,
    grad({ b, outputs: [y], dOut: [dy], attrs }) {
      const axis = attrs.int('axis', -1);
      const total = b.op1('ReduceSum', [dy!, i64(b, [axis])], { keepdims: 1 }, { name: b.fresh('total') });
      return [op(b, 'Sub', [dy!, op(b, 'Mul', [op(b, 'Exp', [y]), total])])];
    },
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
