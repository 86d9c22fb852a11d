// The training-step graph: forward, loss, backward and an SGD update in standard ONNX ops, run by a plain
// onnxruntime InferenceSession (onnxruntime's training API does not exist for Node; see FINDINGS).
//
// Naming convention (the contract a training loop relies on):
//   inputs   `input` float32 [B, C, S, S], `labels` int64 [B], `lr` float32 scalar, and every state tensor:
//            parameters and BN running statistics under their inference names (`stage1.unit1.conv1.weight`,
//            `stage1.unit1.bn1.running_mean`), momentum buffers as `<parameter>#momentum`;
//   outputs  `loss` (mean cross-entropy), `correct` (number of top-1 hits in the batch, float32), and for every
//            state input X its next value `X#next`. A loop feeds each `X#next` back as `X`.
// State inputs have no defaults in the file (an initializer that is also an input is dropped as a feed by
// onnxruntime-node 1.30): their initial values go to a safetensors file beside the graph, under the input names.

import { statSync, unlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { gradients } from '../graph/autodiff.js';
import { type BuildTarget, GraphBuilder, type Value } from '../graph/builder.js';
import type { Graph, Initializer } from '../graph/graph.js';
import { floatTensor } from '../graph/types.js';
import { ONNX_DTYPE } from '../graph/types.js';
import { type ResNetConfig, describe } from '../models/config.js';
import { graphName, resnetForward } from '../models/preact.js';
import { packageVersion } from '../util/paths.js';
import { trackTemp, untrackTemp } from '../util/files.js';
import { modelMetadata } from './metadata.js';
import { DEFAULT_OPSET, type WriteOptions, writeOnnx, writeOnnxAsync } from './onnx.js';
import { type TensorToSave, writeSafeTensors, writeSafeTensorsAsync } from './safetensors.js';
import { CHECKPOINT_FORMAT } from './weights.js';

export const MOMENTUM_SUFFIX = '#momentum';
export const NEXT_SUFFIX = '#next';

export interface SgdOptions {
  /** mu (paper: 0.9). */
  momentum: number;
  /** Weight decay (paper: 1e-4), added to the gradient as in PyTorch: g + wd * w. */
  weightDecay: number;
  nesterov: boolean;
  /**
   * Which tensors get weight decay: 'all' learned tensors (as `torch.optim.SGD(model.parameters())` and the
   * authors' Torch code do), or only conv and FC 'weights' (not BN affine parameters or biases).
   */
  decayOn: 'all' | 'weights';
}

export const DEFAULT_SGD: SgdOptions = { momentum: 0.9, weightDecay: 1e-4, nesterov: false, decayOn: 'all' };

export interface TrainingGraphOptions {
  batch: number;
  /** Input height = width (32 for CIFAR, 224 for ImageNet training crops, 28 for MNIST-style data). */
  size: number;
  seed?: number;
  sgd?: Partial<SgdOptions>;
  /** What runs the step (see BuildTarget): 'any' (default) or 'onnxruntime-cpu' (faster BN statistics). */
  target?: BuildTarget;
}

export interface TrainingGraph {
  graph: Graph;
  /** All state tensors (parameters, momentum buffers, running statistics) with their initial values. */
  state: readonly Initializer[];
  sgd: SgdOptions;
}

export function buildTrainingStep(cfg: ResNetConfig, o: TrainingGraphOptions): TrainingGraph {
  const sgd = { ...DEFAULT_SGD, ...o.sgd };
  if (!(sgd.momentum >= 0 && sgd.momentum < 1)) throw new Error(`momentum must be in [0, 1), got ${sgd.momentum}`);
  if (!(sgd.weightDecay >= 0)) throw new Error(`weight decay must be >= 0, got ${sgd.weightDecay}`);
  const b = new GraphBuilder(`${graphName(cfg)}_train_step`, o.seed ?? 0, 'training', o.target ?? 'any');
  const x = b.input('input', 'float32', [o.batch, cfg.inChannels, o.size, o.size]);
  const labels = b.input('labels', 'int64', [o.batch]);
  const lr = b.input('lr', 'float32', []);
  const logits = resnetForward(b, cfg, x);

  const [loss] = b.scope('loss', () => b.op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction: 'mean' }, { name: 'cross_entropy', outputs: 2 }));
  const correct = b.scope('metrics', () => {
    // Class numbers compared as floats gathered from [0, 1, ..., classes-1] (exact), not as int64: onnxruntime's
    // WebGPU provider has no int64 Equal and would run that node on the CPU (seen in test/webgpu-training.test.ts).
    const ids = b.constant('class_ids', floatTensor([cfg.classes], Float32Array.from({ length: cfg.classes }, (_, i) => i)));
    const argmax = b.op1('ArgMax', [logits], { axis: 1, keepdims: 0 }, { name: 'argmax' });
    const predicted = b.op1('Gather', [ids, argmax], { axis: 0 }, { name: 'predicted' });
    const truth = b.op1('Gather', [ids, labels], { axis: 0 }, { name: 'label_id' });
    const hit = b.op1('Cast', [b.op1('Equal', [predicted, truth], {}, { name: 'equal' })], { to: ONNX_DTYPE.float32 }, { name: 'hit' });
    return b.op1('ReduceSum', [hit], { keepdims: 0 }, { name: 'correct' });
  });

  const params = b.stateList.filter((s) => s.role === 'param');
  const grads = gradients(
    b,
    loss,
    params.map((p) => b.value(p.name)),
  );

  const momentumState: Initializer[] = [];
  const updates: [string, Value][] = [];
  b.scope('sgd', () => {
    const mu = b.constant('momentum', floatTensor([], Float32Array.of(sgd.momentum)));
    const wd = b.constant('weight_decay', floatTensor([], Float32Array.of(sgd.weightDecay)));
    params.forEach((p, i) => {
      const w = b.value(p.name);
      const decays = sgd.weightDecay > 0 && (sgd.decayOn === 'all' || p.decay);
      b.scope(p.name, () => {
        let g = grads[i];
        if (decays) g = b.op1('Add', [g, b.op1('Mul', [w, wd], {}, { name: 'decay' })], {}, { name: 'g' });
        const vName = `${p.name}${MOMENTUM_SUFFIX}`;
        const zeros = floatTensor(p.data.dims, () => new Float32Array(p.data.dims.reduce((a, d) => a * d, 1)));
        momentumState.push({ name: vName, role: 'buffer', decay: false, data: zeros });
        const v = b.input(vName, 'float32', p.data.dims);
        // Each next value is made under its output name: an output that the update also reads (v feeds the step)
        // would otherwise need an Identity pass-through, which some providers lack (WebGPU).
        const vNext = b.op1('Add', [b.op1('Mul', [v, mu], {}, { name: 'v_decay' }), g], {}, { name: 'v', outputName: `${vName}${NEXT_SUFFIX}` });
        const step = sgd.nesterov ? b.op1('Add', [g, b.op1('Mul', [vNext, mu], {}, { name: 'lookahead' })], {}, { name: 'step' }) : vNext;
        const wNext = b.op1('Sub', [w, b.op1('Mul', [step, lr], {}, { name: 'lr_step' })], {}, { name: 'w', outputName: `${p.name}${NEXT_SUFFIX}` });
        updates.push([p.name, wNext], [vName, vNext]);
      });
    });
  });

  b.output(loss, 'loss');
  b.output(correct, 'correct');
  for (const [name, next] of updates) b.output(next, `${name}${NEXT_SUFFIX}`);
  for (const [name, next] of b.stateUpdates) b.output(next, `${name}${NEXT_SUFFIX}`);
  const graph = b.build();
  const state = [...(graph.state ?? []), ...momentumState];
  return { graph: { ...graph, state }, state, sgd };
}

export interface TrainingExportOptions extends TrainingGraphOptions {
  /** The graph's path; the initial state goes to trainingStatePath(output) beside it. */
  output: string;
  opset?: number;
  progress?: (written: number, total: number) => void;
}

export interface TrainingExportReport {
  /** Bytes of the graph file. */
  bytes: number;
  /** The initial state file (trainingStatePath(output)) and its bytes. */
  statePath: string;
  stateBytes: number;
  /** State tensors: graph inputs X with outputs X#next. */
  state: number;
  nodes: number;
}

/** Where the initial state of the training graph `output` goes: `step.onnx` -> `step.state.safetensors`. */
export function trainingStatePath(output: string): string {
  return `${output.replace(/\.onnx$/i, '')}.state.safetensors`;
}

interface PreparedTraining {
  graph: Graph;
  write: WriteOptions;
  tensors: TensorToSave[];
  metadata: Record<string, string>;
  stateBytes: number;
  nodes: number;
}

/** The training-step graph (state as plain inputs), its initial state as tensors to save, and the files' fields. */
function prepareTraining(cfg: ResNetConfig, o: TrainingExportOptions): PreparedTraining {
  const opset = o.opset ?? DEFAULT_OPSET;
  if (opset < 16) throw new Error(`training graphs need opset >= 16 (ScatterElements with reduction), got ${opset}`);
  const { graph, state, sgd } = buildTrainingStep(cfg, o);
  const stateFile = basename(trainingStatePath(o.output));
  const doc = [
    `One SGD training step of ${describe(cfg)}: forward, mean cross-entropy, backward, SGD (momentum ${sgd.momentum}, weight decay ${sgd.weightDecay} on ${sgd.decayOn === 'all' ? 'all learned tensors' : 'conv/FC weights'}${sgd.nesterov ? ', Nesterov' : ''}).`,
    `Inputs: 'input' float32 [${o.batch}, ${cfg.inChannels}, ${o.size}, ${o.size}], 'labels' int64 [${o.batch}], 'lr' float32 scalar, and the state: parameters and BN running statistics by name, momentum buffers as '<parameter>${MOMENTUM_SUFFIX}'. The state inputs have no defaults: their initial values are in ${stateFile} (safetensors, tensor names = input names), written beside this file.`,
    `Outputs: 'loss', 'correct' (top-1 hits in the batch), and for every state input X its next value 'X${NEXT_SUFFIX}': feed it back as X for the next step.`,
    'BatchNorm uses batch statistics and updates running statistics as PyTorch does (momentum 0.1, unbiased variance for the running estimate).',
    o.target === 'onnxruntime-cpu'
      ? "Built for onnxruntime's CPU provider: BatchNormalization in training mode computes the batch statistics (onnxruntime's CUDA and ROCm providers reject that op)."
      : 'Built for any runtime: batch statistics are computed with ReduceSum.',
  ].join('\n');
  const weights = `random-init (seed ${o.seed ?? 0})`;
  const common = { ...modelMetadata(cfg, { weights, folded: false }), target: o.target ?? 'any', batch: String(o.batch), input_size: String(o.size), sgd: JSON.stringify(sgd) };
  const write: WriteOptions = {
    opset,
    docString: doc,
    metadata: { ...common, kind: 'training-step', state_file: stateFile },
    producerVersion: packageVersion(),
  };
  // The state file is also a checkpoint of this project (`export --weights` reads its parameters; the momentum
  // buffers' '#' names are skipped there as in a training run's checkpoint).
  const metadata = { format: CHECKPOINT_FORMAT, config: JSON.stringify(cfg), weights, kind: 'training-state', graph: basename(o.output), seed: String(o.seed ?? 0), batch: String(o.batch) };
  const tensors = state.map((s) => ({ name: s.name, shape: s.data.dims, values: () => s.data.values() as Float32Array }));
  const stateBytes = state.reduce((n, s) => n + 4 * s.data.dims.reduce((p, d) => p * d, 1), 0);
  return { graph, write, tensors, metadata, stateBytes, nodes: graph.nodes.length };
}

/** Progress over both files: the state's tensors, then the graph's bytes after them. */
function withProgress(p: PreparedTraining, progress: TrainingExportOptions['progress']): { tensors: TensorToSave[]; write: WriteOptions } {
  if (!progress) return p;
  let written = 0;
  const tensors = p.tensors.map((t) => ({
    ...t,
    values: () => {
      const v = t.values();
      written += v.byteLength;
      progress(written, p.stateBytes);
      return v;
    },
  }));
  return { tensors, write: { ...p.write, progress: (w, total) => progress(p.stateBytes + w, p.stateBytes + total) } };
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

/**
 * Writes the training-step graph to `o.output` and its initial state to trainingStatePath(o.output), each
 * atomically. The state inputs have no defaults in the graph: a loop reads the state file (tensor names = input
 * names), feeds it with `input`, `labels` and `lr`, then feeds each `X#next` output back as `X`.
 */
export function exportTraining(cfg: ResNetConfig, o: TrainingExportOptions): TrainingExportReport {
  const p = prepareTraining(cfg, o);
  const { tensors, write } = withProgress(p, o.progress);
  const statePath = trainingStatePath(o.output);
  writeSafeTensors(statePath, tensors, p.metadata);
  // The graph goes last: until it is in place, a failure or an interrupt (which removes tracked paths) takes the
  // state file away again, so the pair appears together or not at all.
  trackTemp(statePath);
  let bytes: number;
  try {
    bytes = writeOnnx(p.graph, o.output, write);
  } catch (e) {
    removeQuietly(statePath);
    throw e;
  } finally {
    untrackTemp(statePath);
  }
  return { bytes, statePath, stateBytes: statSync(statePath).size, state: tensors.length, nodes: p.nodes };
}

/** As exportTraining, yielding to the event loop between tensors, so that an interrupt stops it promptly. */
export async function exportTrainingAsync(cfg: ResNetConfig, o: TrainingExportOptions): Promise<TrainingExportReport> {
  const p = prepareTraining(cfg, o);
  const { tensors, write } = withProgress(p, o.progress);
  const statePath = trainingStatePath(o.output);
  await writeSafeTensorsAsync(statePath, tensors, p.metadata);
  trackTemp(statePath);
  let bytes: number;
  try {
    bytes = await writeOnnxAsync(p.graph, o.output, write);
  } catch (e) {
    removeQuietly(statePath);
    throw e;
  } finally {
    untrackTemp(statePath);
  }
  return { bytes, statePath, stateBytes: statSync(statePath).size, state: tensors.length, nodes: p.nodes };
}
