// Every gradient rule against central finite differences, on small shapes with strides, padding and odd sizes.
// Each case builds y = op(inputs), a loss sum(y * R) with a fixed random R, differentiates it with the DSL,
// runs the gradient graph in onnxruntime and compares chosen coordinates with (L(x + e) - L(x - e)) / 2e.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { gradients } from '../src/graph/autodiff.js';
import { type BuildTarget, GraphBuilder, type Value } from '../src/graph/builder.js';
import { rng } from '../src/graph/init.js';
import { batchNorm } from '../src/graph/layers.js';
import { floatTensor, int64Tensor } from '../src/graph/types.js';
import { encodeOnnx } from '../src/export/onnx.js';

interface Case {
  name: string;
  inputs: Record<string, number[]>;
  /** Builds the op under test from the inputs; returns its (float) output. */
  build: (b: GraphBuilder, x: Record<string, Value>) => Value;
  /** Inputs not differentiated (e.g. labels), fed as given. */
  fixed?: Record<string, { dims: number[]; data: BigInt64Array }>;
  training?: boolean;
  target?: BuildTarget;
  tol?: number;
  /** Keep inputs away from kinks (ReLU at 0, max ties) so finite differences are meaningful. */
  positive?: boolean;
}

function randomData(n: number, seed: string, positive = false): Float32Array {
  const u = rng(11, seed);
  return Float32Array.from({ length: n }, () => (positive ? 0.5 + u() : 2 * u() - 1));
}

async function check(c: Case): Promise<void> {
  const b = new GraphBuilder(c.name, 0, c.training ? 'training' : 'inference', c.target);
  const xs: Record<string, Value> = {};
  for (const [name, dims] of Object.entries(c.inputs)) xs[name] = b.input(name, 'float32', dims);
  for (const [name, t] of Object.entries(c.fixed ?? {})) xs[name] = b.input(name, 'int64', t.dims);
  const y = c.build(b, xs);
  const r = b.constant('R', floatTensor(y.shape as number[], randomData((y.shape as number[]).reduce((p, d) => p * d, 1), 'R')));
  const loss = b.op1('ReduceSum', [b.op1('Mul', [y, r], {}, { name: 'weighted' })], { keepdims: 0 }, { name: 'loss' });
  const wrt = Object.keys(c.inputs).map((n) => xs[n]);
  const grads = gradients(b, loss, wrt);
  b.output(loss);
  grads.forEach((g, i) => b.output(g, `d_${wrt[i].name}`));
  // Training-mode layers register parameters as inputs: feed their initial values.
  const graph = b.build();
  const session = await ort.InferenceSession.create(encodeOnnx(graph), { intraOpNumThreads: 1 });
  const feeds: Record<string, ort.Tensor> = {};
  for (const s of graph.state ?? []) feeds[s.name] = new ort.Tensor('float32', s.data.values() as Float32Array, [...s.data.dims]);
  const values: Record<string, Float32Array> = {};
  for (const [name, dims] of Object.entries(c.inputs)) {
    values[name] = randomData(dims.reduce((p, d) => p * d, 1), name, c.positive);
    feeds[name] = new ort.Tensor('float32', values[name], dims);
  }
  for (const [name, t] of Object.entries(c.fixed ?? {})) feeds[name] = new ort.Tensor('int64', t.data, t.dims);
  const out = await session.run(feeds);
  const lossAt = async (name: string, i: number, delta: number): Promise<number> => {
    const v = Float32Array.from(values[name]);
    v[i] += delta;
    const r2 = await session.run({ ...feeds, [name]: new ort.Tensor('float32', v, c.inputs[name]) }, ['loss']);
    return (r2.loss.data as Float32Array)[0];
  };
  const eps = 1e-2;
  for (const [name, dims] of Object.entries(c.inputs)) {
    const analytic = out[`d_${name}`].data as Float32Array;
    const n = dims.reduce((p, d) => p * d, 1);
    const pick = rng(5, `${c.name}.${name}`);
    const coords = new Set<number>([0, n - 1]);
    while (coords.size < Math.min(n, 12)) coords.add(Math.floor(pick() * n));
    let scale = 0;
    for (const v of analytic) scale = Math.max(scale, Math.abs(v));
    for (const i of coords) {
      const numeric = ((await lossAt(name, i, eps)) - (await lossAt(name, i, -eps))) / (2 * eps);
      const err = Math.abs(numeric - analytic[i]);
      const tol = (c.tol ?? 2e-2) * Math.max(1, scale);
      if (err > tol) throw new Error(`${c.name}: d loss / d ${name}[${i}] analytic ${analytic[i]} vs finite difference ${numeric} (error ${err.toExponential(2)} > ${tol.toExponential(2)})`);
    }
  }
  await session.release();
}

const conv = (b: GraphBuilder, x: Value, w: Value, attrs: Record<string, number[]>, bias?: Value) => b.op1('Conv', bias ? [x, w, bias] : [x, w], attrs, { name: 'op' });
const i64 = (b: GraphBuilder, name: string, v: number[]) => b.constant(name, int64Tensor([v.length], v));

const CASES: Case[] = [
  { name: 'Conv 3x3 stride 1 pad 1', inputs: { x: [2, 3, 5, 6], w: [4, 3, 3, 3] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }) },
  { name: 'Conv 3x3 stride 2 pad 1, odd size, bias', inputs: { x: [2, 3, 7, 5], w: [4, 3, 3, 3], bias: [4] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, v.bias) },
  { name: 'Conv 1x1 stride 2 (projection), even size', inputs: { x: [2, 4, 6, 6], w: [8, 4, 1, 1] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [1, 1], strides: [2, 2], pads: [0, 0, 0, 0] }) },
  { name: 'Conv 1x1 stride 2, odd size', inputs: { x: [1, 3, 7, 7], w: [2, 3, 1, 1] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [1, 1], strides: [2, 2], pads: [0, 0, 0, 0] }) },
  { name: 'Conv 7x7 stride 2 pad 3 (ImageNet stem)', inputs: { x: [1, 3, 11, 13], w: [4, 3, 7, 7] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [7, 7], strides: [2, 2], pads: [3, 3, 3, 3] }) },
  // dW has three formulations: wide rows at stride 1, taps cut from NCHW (W >= C) or NHWC (W < C) when strided.
  { name: 'Conv 3x3 stride 1 pad 1, more channels than columns', inputs: { x: [2, 6, 5, 4], w: [3, 6, 3, 3] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }) },
  { name: 'Conv 3x1 stride 1, asymmetric pads', inputs: { x: [2, 3, 5, 4], w: [2, 3, 3, 1] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [3, 1], pads: [2, 0, 0, 1] }) },
  { name: 'Conv 3x3 stride 2 pad 1, odd size, more channels than columns', inputs: { x: [2, 5, 7, 3], w: [4, 5, 3, 3] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }) },
  { name: 'Conv 1x1 stride 1 (bottleneck)', inputs: { x: [2, 3, 4, 5], w: [4, 3, 1, 1] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [1, 1], pads: [0, 0, 0, 0] }) },
  { name: 'Conv 1x1 stride 2, more channels than columns', inputs: { x: [2, 6, 4, 3], w: [2, 6, 1, 1] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [1, 1], strides: [2, 2], pads: [0, 0, 0, 0] }) },
  { name: 'Conv 3x3 no padding', inputs: { x: [2, 2, 6, 5], w: [3, 2, 3, 3] }, build: (b, v) => conv(b, v.x, v.w, { kernel_shape: [3, 3] }) },
  {
    name: 'BatchNormalization (inference form, all five inputs)',
    inputs: { x: [3, 4, 3, 2], g: [4], beta: [4], m: [4], v: [4] },
    positive: true,
    build: (b, v) => b.op1('BatchNormalization', [v.x, v.g, v.beta, v.m, v.v], { epsilon: 1e-5 }, { name: 'op' }),
  },
  { name: 'BatchNormalization in training mode (batch statistics)', inputs: { x: [4, 3, 3, 3] }, training: true, build: (b, v) => batchNorm(b, v.x, 'bn') },
  {
    name: "BatchNormalization in training mode, onnxruntime-cpu spelling (the op's training mode)",
    inputs: { x: [4, 3, 3, 3] },
    training: true,
    target: 'onnxruntime-cpu',
    build: (b, v) => batchNorm(b, v.x, 'bn'),
  },
  { name: 'Relu', inputs: { x: [2, 3, 4, 4] }, build: (b, v) => b.op1('Relu', [v.x], {}, { name: 'op' }) },
  { name: 'Add with broadcasting', inputs: { x: [2, 3, 4, 4], y: [1, 3, 1, 1] }, build: (b, v) => b.op1('Add', [v.x, v.y], {}, { name: 'op' }) },
  { name: 'Sub with broadcasting', inputs: { x: [2, 3], y: [3] }, build: (b, v) => b.op1('Sub', [v.x, v.y], {}, { name: 'op' }) },
  { name: 'Mul with broadcasting', inputs: { x: [2, 3, 4], y: [3, 1] }, build: (b, v) => b.op1('Mul', [v.x, v.y], {}, { name: 'op' }) },
  { name: 'Div', inputs: { x: [2, 3], y: [2, 3] }, positive: true, build: (b, v) => b.op1('Div', [v.x, v.y], {}, { name: 'op' }) },
  { name: 'Sigmoid', inputs: { x: [2, 5] }, build: (b, v) => b.op1('Sigmoid', [v.x], {}, { name: 'op' }) },
  { name: 'Sqrt, Reciprocal, Exp, Neg', inputs: { x: [6] }, positive: true, build: (b, v) => b.op1('Neg', [b.op1('Exp', [b.op1('Reciprocal', [b.op1('Sqrt', [v.x])])])], {}, { name: 'op' }) },
  { name: 'MaxPool 3x3 stride 2 pad 1 (overlapping windows)', inputs: { x: [2, 2, 7, 6] }, build: (b, v) => b.op1('MaxPool', [v.x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'op' }) },
  { name: 'GlobalAveragePool', inputs: { x: [2, 3, 5, 3] }, build: (b, v) => b.op1('GlobalAveragePool', [v.x], {}, { name: 'op' }) },
  { name: 'Gemm transB with bias', inputs: { x: [3, 5], w: [4, 5], c: [4] }, build: (b, v) => b.op1('Gemm', [v.x, v.w, v.c], { transB: 1 }, { name: 'op' }) },
  { name: 'Gemm', inputs: { x: [3, 5], w: [5, 2] }, build: (b, v) => b.op1('Gemm', [v.x, v.w], {}, { name: 'op' }) },
  { name: 'MatMul', inputs: { x: [3, 4], y: [4, 2] }, build: (b, v) => b.op1('MatMul', [v.x, v.y], {}, { name: 'op' }) },
  { name: 'Flatten and Reshape', inputs: { x: [2, 3, 2, 2] }, build: (b, v) => b.op1('Reshape', [b.op1('Flatten', [v.x], { axis: 1 }, { name: 'f' }), i64(b, 's', [4, 6])], {}, { name: 'op' }) },
  { name: 'Transpose', inputs: { x: [2, 3, 4] }, build: (b, v) => b.op1('Transpose', [v.x], { perm: [2, 0, 1] }, { name: 'op' }) },
  { name: 'Pad channels (option A)', inputs: { x: [2, 3, 3, 3] }, build: (b, v) => b.op1('Pad', [v.x, i64(b, 'p', [0, 0, 1, 0, 0, 2, 0, 1])], { mode: 'constant' }, { name: 'op' }) },
  {
    name: 'Slice with step 2 on odd and even sizes (option A subsample)',
    inputs: { x: [2, 3, 7, 6] },
    build: (b, v) => b.op1('Slice', [v.x, i64(b, 's', [0, 0]), i64(b, 'e', [1e9, 1e9]), i64(b, 'a', [2, 3]), i64(b, 'st', [2, 2])], {}, { name: 'op' }),
  },
  {
    name: 'Slice with offsets, steps 3 and 2 on spatial axes and a channel range',
    inputs: { x: [2, 4, 7, 8] },
    build: (b, v) => b.op1('Slice', [v.x, i64(b, 's', [1, 1, 2]), i64(b, 'e', [3, 7, 7]), i64(b, 'a', [1, 2, -1]), i64(b, 'st', [1, 3, 2])], {}, { name: 'op' }),
  },
  { name: 'Slice with offsets and step 3', inputs: { x: [2, 10] }, build: (b, v) => b.op1('Slice', [v.x, i64(b, 's', [1]), i64(b, 'e', [9]), i64(b, 'a', [1]), i64(b, 'st', [3])], {}, { name: 'op' }) },
  { name: 'Concat', inputs: { x: [2, 3, 2], y: [2, 1, 2] }, build: (b, v) => b.op1('Concat', [v.x, v.y], { axis: 1 }, { name: 'op' }) },
  { name: 'Softmax', inputs: { x: [3, 5] }, build: (b, v) => b.op1('Softmax', [v.x], { axis: 1 }, { name: 'op' }) },
  { name: 'LogSoftmax', inputs: { x: [3, 5] }, build: (b, v) => b.op1('LogSoftmax', [v.x], { axis: 1 }, { name: 'op' }) },
  { name: 'ReduceSum keepdims 0, and Expand', inputs: { x: [2, 3, 4] }, build: (b, v) => b.op1('Expand', [b.op1('ReduceSum', [v.x, i64(b, 'a', [0, 2])], { keepdims: 0 }, { name: 'r' }), i64(b, 'sh', [2, 3])], {}, { name: 'op' }) },
  {
    name: 'SoftmaxCrossEntropyLoss (mean)',
    inputs: { x: [4, 5] },
    fixed: { labels: { dims: [4], data: BigInt64Array.of(0n, 3n, 4n, 1n) } },
    build: (b, v) => b.op('SoftmaxCrossEntropyLoss', [v.x, v.labels], { reduction: 'mean' }, { name: 'op', outputs: 2 })[0],
  },
];

describe('gradient rules match finite differences', () => {
  for (const c of CASES) it(c.name, () => check(c));
});

describe('Dropout gradient', () => {
  it('is dY * mask / (1 - ratio), with the forward pass\'s own mask', async () => {
    const b = new GraphBuilder('dropout', 0, 'training');
    const x = b.input('x', 'float32', [4, 50]);
    const ratio = b.constant('ratio', floatTensor([], Float32Array.of(0.5)));
    const train = b.constant('train', { dtype: 'bool', dims: [], values: () => Uint8Array.of(1) });
    const [y, mask] = b.op('Dropout', [x, ratio, train], {}, { name: 'drop', outputs: 2 });
    const loss = b.op1('ReduceSum', [y], { keepdims: 0 }, { name: 'loss' });
    const [dx] = gradients(b, loss, [x]);
    b.output(loss);
    b.output(mask, 'mask');
    b.output(dx, 'dx');
    const session = await ort.InferenceSession.create(encodeOnnx(b.build()));
    const out = await session.run({ x: new ort.Tensor('float32', randomData(200, 'x'), [4, 50]) });
    const m = out.mask.data as Uint8Array;
    const g = out.dx.data as Float32Array;
    const kept = Array.from(m).filter(Boolean).length;
    expect(kept).toBeGreaterThan(50);
    expect(kept).toBeLessThan(150);
    m.forEach((keep, i) => expect(g[i]).toBeCloseTo(keep ? 2 : 0, 6));
  });
});
