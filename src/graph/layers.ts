// Neural-network layers built from ops: each registers its parameters under the layer's name, so the
// weight of `stage3.unit12.conv2` is `stage3.unit12.conv2.weight` in the graph, checkpoints and errors.

import type { GraphBuilder, Value } from './builder.js';
import { floatTensor, int64Tensor } from './types.js';

export interface ConvOptions {
  out: number;
  kernel: number;
  stride?: number;
  /** Symmetric padding; defaults to kernel/2 (same size at stride 1). */
  pad?: number;
  bias?: boolean | number;
}

export function conv(b: GraphBuilder, x: Value, name: string, o: ConvOptions): Value {
  const inC = x.shape[1];
  if (typeof inC !== 'number') throw new Error(`${b.path}.${name}: input channels must be concrete, got ${x}`);
  const k = o.kernel;
  const stride = o.stride ?? 1;
  const pad = o.pad ?? Math.floor(k / 2);
  const [w, bias] = b.scope(name, () => [
    b.param('weight', [o.out, inC, k, k], { kind: 'he-normal', fanOut: k * k * o.out }, { decay: true }),
    o.bias === undefined || o.bias === false ? null : b.param('bias', [o.out], { kind: 'constant', value: o.bias === true ? 0 : o.bias }),
  ]);
  const attrs = { kernel_shape: [k, k], strides: [stride, stride], pads: [pad, pad, pad, pad] };
  return b.op1('Conv', bias ? [x, w, bias] : [x, w], attrs, { name });
}

export const BN_EPSILON = 1e-5;

export function batchNorm(b: GraphBuilder, x: Value, name: string): Value {
  const c = x.shape[1];
  if (typeof c !== 'number') throw new Error(`${b.path}.${name}: channels must be concrete, got ${x}`);
  const [gamma, beta, mean, variance] = b.scope(name, () => [
    b.param('weight', [c], { kind: 'constant', value: 1 }),
    b.param('bias', [c], { kind: 'constant', value: 0 }),
    b.param('running_mean', [c], { kind: 'constant', value: 0 }, { role: 'buffer' }),
    b.param('running_var', [c], { kind: 'constant', value: 1 }, { role: 'buffer' }),
  ]);
  if (b.training) return b.scope(name, () => batchNormTraining(b, x, gamma, beta, mean, variance));
  return b.op1('BatchNormalization', [x, gamma, beta, mean, variance], { epsilon: BN_EPSILON, momentum: 0.9 }, { name });
}

/** PyTorch's BN momentum: running = (1 - m) * running + m * batch statistic. */
export const BN_MOMENTUM = 0.1;

/**
 * Training-mode BN as PyTorch defines it: normalise with the batch mean and biased variance; update the running
 * mean, and the running variance with the unbiased batch variance, at momentum 0.1. Either spelling's gradient is
 * the closed-form training-mode backward (more exact and cheaper than differentiating through the statistics):
 * - target 'any': the statistics spelled out with ReduceSum, fed to the inference-form BatchNormalization op,
 *   which is marked (gradHint) so that its gradient rule applies the closed form;
 * - target 'onnxruntime-cpu': one BatchNormalization op in training mode with momentum 0, which normalises and
 *   outputs the batch mean and biased variance themselves (bit-identical statistics, 2.5x faster here).
 * The running statistics are updated from the batch statistics, since ONNX's own update would use the biased variance.
 */
function batchNormTraining(b: GraphBuilder, x: Value, gamma: Value, beta: Value, runMean: Value, runVar: Value): Value {
  const shape = x.shape.map((d) => {
    if (typeof d !== 'number') throw new Error(`${b.path}: training graphs need concrete shapes, got ${x}`);
    return d;
  });
  const n = shape.reduce((p, d, i) => (i === 1 ? p : p * d), 1);
  const [y, mean, variance] = b.target === 'onnxruntime-cpu' ? fusedStatistics(b, x, gamma, beta, runMean, runVar) : explicitStatistics(b, x, gamma, beta, shape);
  const keep = scalar(b, 'keep', 1 - BN_MOMENTUM);
  const newMean = b.op1('Add', [b.op1('Mul', [runMean, keep], {}, { name: 'mean_decay' }), b.op1('Mul', [mean, scalar(b, 'm', BN_MOMENTUM)], {}, { name: 'mean_step' })], {}, { name: 'running_mean_next' });
  const unbiased = n > 1 ? n / (n - 1) : 1;
  const newVar = b.op1('Add', [b.op1('Mul', [runVar, keep], {}, { name: 'var_decay' }), b.op1('Mul', [variance, scalar(b, 'mv', BN_MOMENTUM * unbiased)], {}, { name: 'var_step' })], {}, { name: 'running_var_next' });
  b.stateUpdate(runMean.name, newMean);
  b.stateUpdate(runVar.name, newVar);
  return y;
}

/** [normalised, batch mean, biased batch variance] by ReduceSum and the inference-form op. */
function explicitStatistics(b: GraphBuilder, x: Value, gamma: Value, beta: Value, shape: number[]): Value[] {
  const c = shape[1];
  const axes = shape.map((_, i) => i).filter((i) => i !== 1);
  const n = axes.reduce((p, i) => p * shape[i], 1);
  const axesV = b.constant('axes', int64Tensor([axes.length], axes));
  const perC = b.constant('per_channel', int64Tensor([1], [c]));
  const mean4 = b.op1('Mul', [b.op1('ReduceSum', [x, axesV], { keepdims: 1 }, { name: 'sum' }), scalar(b, 'inv_n', 1 / n)], {}, { name: 'mean4' });
  const centred = b.op1('Sub', [x, mean4], {}, { name: 'centred' });
  const sq = b.op1('Mul', [centred, centred], {}, { name: 'squared' });
  const var4 = b.op1('Mul', [b.op1('ReduceSum', [sq, axesV], { keepdims: 1 }, { name: 'sum_sq' }), scalar(b, 'inv_n2', 1 / n)], {}, { name: 'var4' });
  const mean = b.op1('Reshape', [mean4, perC], {}, { name: 'batch_mean' });
  const variance = b.op1('Reshape', [var4, perC], {}, { name: 'batch_var' });
  const y = b.op1('BatchNormalization', [x, gamma, beta, mean, variance], { epsilon: BN_EPSILON }, { name: 'normalise', gradHint: 'batch-statistics' });
  return [y, mean, variance];
}

/** [normalised, batch mean, biased batch variance] from one training-mode BatchNormalization with momentum 0. */
function fusedStatistics(b: GraphBuilder, x: Value, gamma: Value, beta: Value, runMean: Value, runVar: Value): Value[] {
  // With momentum 0 the running-statistic inputs only have to be finite. They are computed zeros used by nothing
  // else, not constants: fed zero constants, onnxruntime 1.30 (optimisations on) made the backward's other zero
  // constants wrong, apparently writing its statistic outputs into input buffers that constant sharing had merged
  // (wrong gradients, found by the finite-difference test).
  const noStat = (v: Value, name: string): Value => b.op1('Mul', [v, scalar(b, `${name}_zero`, 0)], {}, { name });
  return b.op('BatchNormalization', [x, gamma, beta, noStat(runMean, 'no_mean'), noStat(runVar, 'no_var')], { epsilon: BN_EPSILON, momentum: 0, training_mode: 1 }, { name: 'normalise', outputs: ['y', 'batch_mean', 'batch_var'] });
}

export function relu(b: GraphBuilder, x: Value, name: string): Value {
  return b.op1('Relu', [x], {}, { name });
}

/** Global average pooling then a fully connected layer with bias: the family's classifier. */
export function classifier(b: GraphBuilder, x: Value, classes: number): Value {
  const pooled = b.op1('GlobalAveragePool', [x], {}, { name: 'pool' });
  const flat = b.op1('Flatten', [pooled], { axis: 1 }, { name: 'flatten' });
  const inF = flat.shape[1] as number;
  const [w, bias] = b.scope('fc', () => [
    b.param('weight', [classes, inF], { kind: 'uniform', bound: 1 / Math.sqrt(inF) }, { decay: true }),
    b.param('bias', [classes], { kind: 'constant', value: 0 }),
  ]);
  return b.op1('Gemm', [flat, w, bias], { transB: 1 }, { name: 'fc' });
}

/** A float scalar stored as a 1-element constant, for broadcasting in Mul/Add/Sub. */
export function scalar(b: GraphBuilder, name: string, value: number): Value {
  return b.constant(name, floatTensor([1], Float32Array.of(value)));
}

/**
 * Shortcut option A of He et al.: take every `stride`-th pixel and append zero channels up to `out`.
 * Parameter-free; spelled as Slice + Pad so every ONNX runtime runs it.
 */
export function subsampleAndPad(b: GraphBuilder, x: Value, name: string, stride: number, out: number): Value {
  return b.scope(name, () => {
    let y = x;
    if (stride > 1) {
      const starts = b.constant('starts', int64Tensor([2], [0, 0]));
      const ends = b.constant('ends', int64Tensor([2], [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]));
      const axes = b.constant('axes', int64Tensor([2], [2, 3]));
      const steps = b.constant('steps', int64Tensor([2], [stride, stride]));
      y = b.op1('Slice', [y, starts, ends, axes, steps], {}, { name: 'subsample' });
    }
    const extra = out - (x.shape[1] as number);
    if (extra > 0) {
      const pads = b.constant('pads', int64Tensor([8], [0, 0, 0, 0, 0, extra, 0, 0]));
      y = b.op1('Pad', [y, pads], { mode: 'constant' }, { name: 'pad' });
    }
    return y;
  });
}
