// The QDQ rewrite, as pure functions of a decoded model: prepare the float graph (fold BatchNorms into convs;
// optionally turn the pre-activation BatchNorms into depthwise 1x1 convs), plan which values are quantised, and
// insert QuantizeLinear / DequantizeLinear pairs with calibrated u8 activations, per-channel symmetric s8 weights
// and int32 biases, in the arrangement onnxruntime fuses into QLinearConv (see FINDINGS.md).

import type { OnnxTypes } from '../export/proto.js';
import { DTYPE, type GraphIndex, type ModelProto, type NodeProto, type TensorProto, attrs, dims, floatAttr, floatValues, indexGraph, intAttr, tensor } from './onnx-model.js';
import { type QParams, type Range, quantiseBias, quantiseWeights, u8Params } from './params.js';

/**
 * Where the pre-activation structure is quantised.
 * - `residual`: the residual additions in float (the stream stays float; each conv's u8 output is dequantised into
 *   the Add) or `int8` (QLinearAdd: the stream is u8 between units).
 * - `preact`: the unit-opening BatchNorm (which no conv precedes alone, so it cannot be folded) stays a float
 *   `BatchNormalization`, or becomes an `int8` depthwise 1x1 convolution (weight = gamma / sqrt(var + eps), exact
 *   in s8 per channel) that onnxruntime runs as one more QLinearConv, with its ReLU folded into the u8 range.
 */
export interface Arrangement {
  residual: 'float' | 'int8';
  preact: 'float' | 'int8';
  /** The classifier (Gemm): float, or s8 weights per output with a u8 input (onnxruntime's QGemm, float logits). */
  fc: 'float' | 'int8';
}

/** The arrangement measured fastest at no accuracy cost (BENCHMARKS.md, "int8"). */
export const DEFAULT_ARRANGEMENT: Arrangement = { residual: 'int8', preact: 'int8', fc: 'int8' };

/** The model cannot be quantised as asked; the message says why (exit 2). */
export class QuantizeError extends Error {
  override name = 'QuantizeError';
}

/** Ops that only move values (their output's range is their input's): their output shares the input's u8 parameters. */
const PASS_THROUGH = new Set(['MaxPool', 'Slice', 'Pad', 'Flatten', 'Reshape', 'Identity', 'Transpose', 'Squeeze', 'Unsqueeze']);

type Graph = OnnxTypes.IGraphProto;

function cloneGraph(g: Graph): { nodes: NodeProto[]; inits: TensorProto[] } {
  return { nodes: (g.node ?? []).map((n) => ({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])] })), inits: [...(g.initializer ?? [])] };
}

function withGraph(m: ModelProto, nodes: NodeProto[], inits: TensorProto[], extra: Partial<Graph> = {}): ModelProto {
  return { ...m, graph: { ...m.graph, node: nodes, initializer: inits, ...extra } } as ModelProto;
}

function bnParams(bn: NodeProto, ix: GraphIndex): { scale: Float32Array; shift: Float32Array } | undefined {
  const ps = (bn.input ?? []).slice(1, 5).map((n) => ix.initializers.get(n));
  if (ps.length !== 4 || ps.some((p) => p === undefined)) return undefined;
  const [gamma, beta, mean, variance] = ps.map((p) => floatValues(p!));
  const eps = floatAttr(bn, 'epsilon', 1e-5);
  const scale = new Float32Array(gamma.length);
  const shift = new Float32Array(gamma.length);
  for (let c = 0; c < gamma.length; c++) {
    scale[c] = gamma[c] / Math.sqrt(variance[c] + eps);
    shift[c] = beta[c] - mean[c] * scale[c];
  }
  return { scale, shift };
}

/**
 * The float graph the quantiser works on: every inference BatchNorm that reads a conv used only by it is folded
 * into the conv (a `--no-fold` export then quantises like a folded one); with `preact: 'int8'` every other one
 * becomes a depthwise 1x1 conv with bias. The result computes the same function.
 */
export function prepareFloat(m: ModelProto, a: Arrangement): { model: ModelProto; folded: number; depthwise: number } {
  const ix = indexGraph(m.graph!);
  const { nodes, inits } = cloneGraph(m.graph!);
  const replaced = new Map<string, TensorProto>();
  const added: TensorProto[] = [];
  const drop = new Set<NodeProto>();
  let folded = 0;
  let depthwise = 0;
  const byOutput = new Map(nodes.flatMap((n) => (n.output ?? []).map((o) => [o, n] as const)));
  for (const bn of nodes) {
    if (bn.opType !== 'BatchNormalization' || (bn.output ?? []).length !== 1 || intAttr(bn, 'training_mode', 0) !== 0) continue;
    const p = bnParams(bn, ix);
    if (!p) continue;
    const x = bn.input![0];
    const conv = byOutput.get(x);
    const readers = ix.consumers.get(x) ?? [];
    const w = conv && conv.opType === 'Conv' ? ix.initializers.get(conv.input![1]) : undefined;
    if (conv && w && readers.length === 1 && !ix.outputs.has(x) && (conv.input![2] === undefined || conv.input![2] === '' || ix.initializers.has(conv.input![2]))) {
      const wv = floatValues(replaced.get(w.name!) ?? w);
      const out = dims(w)[0];
      const per = wv.length / out;
      const nw = new Float32Array(wv.length);
      for (let c = 0; c < out; c++) for (let i = 0; i < per; i++) nw[c * per + i] = wv[c * per + i] * p.scale[c];
      const bName = conv.input![2] || `${conv.name ?? w.name}.bias`;
      const b0 = conv.input![2] ? floatValues(ix.initializers.get(conv.input![2])!) : new Float32Array(out);
      const nb = new Float32Array(out);
      for (let c = 0; c < out; c++) nb[c] = b0[c] * p.scale[c] + p.shift[c];
      replaced.set(w.name!, tensor(w.name!, DTYPE.float, dims(w), nw));
      if (conv.input![2]) replaced.set(bName, tensor(bName, DTYPE.float, [out], nb));
      else added.push(tensor(bName, DTYPE.float, [out], nb));
      conv.input = [conv.input![0], w.name!, bName];
      conv.output = [bn.output![0]];
      drop.add(bn);
      folded++;
    } else if (a.preact === 'int8') {
      const c = p.scale.length;
      const base = bn.name || bn.output![0];
      const wName = `${base}.depthwise.weight`;
      const bName = `${base}.depthwise.bias`;
      added.push(tensor(wName, DTYPE.float, [c, 1, 1, 1], p.scale), tensor(bName, DTYPE.float, [c], p.shift));
      Object.assign(bn, { opType: 'Conv', domain: '', input: [x, wName, bName], attribute: attrs({ group: c, kernel_shape: [1, 1] }) });
      depthwise++;
    }
  }
  const kept = nodes.filter((n) => !drop.has(n));
  const used = new Set(kept.flatMap((n) => n.input ?? []));
  const newInits = [...inits.map((t) => replaced.get(t.name!) ?? t), ...added].filter((t) => used.has(t.name!));
  // Graph inputs that named dropped BatchNorm statistics (older IR) go with them.
  const input = (m.graph!.input ?? []).filter((v) => used.has(v.name!) || ix.inputs.has(v.name!));
  return { model: withGraph(m, kept, newInits, { input }), folded, depthwise };
}

/** One value carried as u8: its own range, or (after a pass-through op) the parameters of the value it moves. */
export interface Mark {
  /** A ReLU output: its u8 range starts at 0, so the zero point is 0 and onnxruntime drops the ReLU. */
  relu: boolean;
  /** For a pass-through op's output: the value whose parameters it shares. */
  sameAs?: string;
  /** Only convolutions read the u8 copy; other readers keep the float value (a float residual stream). */
  convReadersOnly?: boolean;
}

export interface Plan {
  /** The values to carry as u8, in graph order. */
  marks: Map<string, Mark>;
  /** The convolutions to quantise (all of them). */
  convs: NodeProto[];
  /** The Gemms whose weights are quantised (fc: 'int8'; weight [out, in] as transB = 1 gives it). */
  gemms: NodeProto[];
  /** For each conv: the value that stands for its output (its ReLU's when a ReLU alone reads it), for the report. */
  convOutputs: Map<NodeProto, string>;
}

/** The values whose range calibration must measure: every mark that has its own parameters. */
export function calibrationTargets(p: Plan): string[] {
  return [...p.marks.entries()].filter(([, m]) => m.sameAs === undefined).map(([t]) => t);
}

/**
 * Which values are carried as u8: every conv's input; every conv's output, or the output of a ReLU that alone
 * reads it; the classifier's input (`fc: 'int8'`); with `residual: 'int8'` both inputs and the output of every
 * Add. Refuses convolutions whose weights are not constants (a training-step graph).
 */
export function planQuantisation(m: ModelProto, a: Arrangement): Plan {
  const g = m.graph!;
  const ix = indexGraph(g);
  const marks = new Map<string, Mark>();
  const convs: NodeProto[] = [];
  const gemms: NodeProto[] = [];
  const convOutputs = new Map<NodeProto, string>();
  const mark = (t: string, relu: boolean): void => {
    if (marks.has(t)) return;
    // A value moved by MaxPool / Slice / Pad ... shares the parameters of where it came from, so that onnxruntime
    // can run the op on u8 directly (it drops a DQ -> op -> Q whose two sides agree).
    const p = ix.producer.get(t);
    if (p && PASS_THROUGH.has(p.opType!) && !ix.initializers.has(p.input![0])) {
      let root = p.input![0];
      for (let q = ix.producer.get(root); q && PASS_THROUGH.has(q.opType!); q = ix.producer.get(root)) root = q.input![0];
      const rootRelu = ix.producer.get(root)?.opType === 'Relu';
      mark(root, rootRelu);
      marks.set(t, { relu: marks.get(root)!.relu, sameAs: root });
      return;
    }
    // With float residuals, an Add's output (the stream) stays float for the next Add and is quantised for convs only.
    const floatStream = a.residual === 'float' && p?.opType === 'Add';
    marks.set(t, { relu: relu || p?.opType === 'Relu', ...(floatStream ? { convReadersOnly: true } : {}) });
  };
  for (const n of g.node ?? []) {
    if (n.opType === 'Conv') {
      const [x, w, b] = n.input ?? [];
      if (!ix.initializers.has(w) || (b && !ix.initializers.has(b)))
        throw new QuantizeError(`conv ${n.name} takes its weights at run time (${ix.initializers.has(w) ? b : w} is not a constant): only inference models with constant weights can be quantised (not a training-step graph)`);
      convs.push(n);
      mark(x, false);
      const y = n.output![0];
      const readers = ix.consumers.get(y) ?? [];
      if (ix.outputs.has(y)) throw new QuantizeError(`conv ${n.name}'s output ${y} is a graph output: quantising it would change the model's output type`);
      const reluOnly = readers.length === 1 && readers[0].opType === 'Relu' && !ix.outputs.has(readers[0].output![0]);
      const out = reluOnly ? readers[0].output![0] : y;
      mark(out, reluOnly);
      convOutputs.set(n, out);
    } else if (n.opType === 'Gemm' && a.fc === 'int8') {
      const [x, w, b] = n.input ?? [];
      const plain = intAttr(n, 'transA', 0) === 0 && intAttr(n, 'transB', 0) === 1 && floatAttr(n, 'alpha', 1) === 1 && floatAttr(n, 'beta', 1) === 1;
      if (!plain || !ix.initializers.has(w) || (b && !ix.initializers.has(b)) || (b && dims(ix.initializers.get(b)!).length !== 1)) continue;
      gemms.push(n);
      mark(x, false);
    } else if (n.opType === 'Add' && a.residual === 'int8') {
      const ins = n.input ?? [];
      if (ins.length !== 2 || ins.some((i) => ix.initializers.has(i)) || ix.outputs.has(n.output![0])) continue;
      for (const i of ins) mark(i, false);
      mark(n.output![0], false);
    }
  }
  if (convs.length === 0) throw new QuantizeError('the model has no convolutions to quantise');
  // Graph order, so that a producer's Q comes before its readers' DQs.
  const order = new Map<string, number>();
  for (const v of ix.inputs) order.set(v, -1);
  (g.node ?? []).forEach((n, i) => (n.output ?? []).forEach((o) => order.set(o, i)));
  const sorted = new Map([...marks.entries()].sort((x, y) => (order.get(x[0]) ?? 0) - (order.get(y[0]) ?? 0)));
  return { marks: sorted, convs, gemms, convOutputs };
}

/** The u8 parameters of every marked value from the calibrated ranges (shared ones resolved). */
export function activationParams(p: Plan, ranges: ReadonlyMap<string, Range>): Map<string, QParams> {
  const out = new Map<string, QParams>();
  for (const [t, mk] of p.marks) {
    if (mk.sameAs !== undefined) continue;
    const r = ranges.get(t);
    if (!r) throw new Error(`internal error: no calibrated range for ${t}`);
    out.set(t, u8Params(mk.relu ? { min: 0, max: r.max } : r));
  }
  for (const [t, mk] of p.marks) if (mk.sameAs !== undefined) out.set(t, out.get(mk.sameAs)!);
  return out;
}

/** Name suffixes of what the rewrite adds, beside the value they belong to (`stage1.unit1.relu1#u8`). */
export const QNAME = { quantised: '#u8', scale: '#scale', zeroPoint: '#zero_point', dequantised: '#dq' } as const;

/**
 * The QDQ model: a QuantizeLinear after the producer of every marked value, one DequantizeLinear per reader, and
 * each conv's weight (s8, per output channel) and bias (int32, at input scale x weight scale) as constants read
 * through their own DequantizeLinear. Returns the new model; `m` is not changed.
 */
export function rewriteQdq(m: ModelProto, p: Plan, params: ReadonlyMap<string, QParams>, o: { weightBits: 7 | 8 }): ModelProto {
  const qmax = o.weightBits === 7 ? 64 : 127;
  const g = m.graph!;
  const ix = indexGraph(g);
  const inits = [...(g.initializer ?? [])];
  const dropInit = new Set<string>();
  const out: NodeProto[] = [];
  const consumerCount = new Map<string, number>();
  const qdqAttrs = (axis?: number): OnnxTypes.IAttributeProto[] => (axis === undefined ? [] : attrs({ axis }));

  const quantise = (t: string): NodeProto => {
    const q = params.get(t)!;
    inits.push(tensor(t + QNAME.scale, DTYPE.float, [], Float32Array.of(q.scale)), tensor(t + QNAME.zeroPoint, DTYPE.uint8, [], Uint8Array.of(q.zeroPoint)));
    return { name: `${t}/QuantizeLinear`, opType: 'QuantizeLinear', input: [t, t + QNAME.scale, t + QNAME.zeroPoint], output: [t + QNAME.quantised], attribute: [] };
  };
  const dequantise = (t: string): { node: NodeProto; output: string } => {
    const k = consumerCount.get(t) ?? 0;
    consumerCount.set(t, k + 1);
    const output = `${t}${QNAME.dequantised}${k}`;
    return { node: { name: `${t}/DequantizeLinear${k}`, opType: 'DequantizeLinear', input: [t + QNAME.quantised, t + QNAME.scale, t + QNAME.zeroPoint], output: [output], attribute: [] }, output };
  };

  // Graph inputs that are marked are quantised first.
  for (const t of p.marks.keys()) if (ix.inputs.has(t)) out.push(quantise(t));
  const weighted = new Set([...p.convs, ...p.gemms]);
  for (const n0 of g.node ?? []) {
    const n: NodeProto = { ...n0, input: [...(n0.input ?? [])] };
    // Each marked input is read through this node's own DequantizeLinear.
    n.input = n.input!.map((i) => {
      const mk = p.marks.get(i);
      if (!mk || (mk.convReadersOnly && n0.opType !== 'Conv')) return i;
      const dq = dequantise(i);
      out.push(dq.node);
      return dq.output;
    });
    if (weighted.has(n0)) {
      const [x, w, b] = n0.input!;
      const wt = ix.initializers.get(w)!;
      const wd = dims(wt);
      const sx = params.get(x)!.scale;
      const bias = b ? floatValues(ix.initializers.get(b)!) : undefined;
      const qw = quantiseWeights(floatValues(wt), wd[0], sx, bias, qmax);
      const C = wd[0];
      inits.push(tensor(w + '#s8', DTYPE.int8, wd, qw.values), tensor(w + QNAME.scale, DTYPE.float, [C], qw.scales), tensor(w + QNAME.zeroPoint, DTYPE.int8, [C], new Int8Array(C)));
      out.push({ name: `${w}/DequantizeLinear`, opType: 'DequantizeLinear', input: [w + '#s8', w + QNAME.scale, w + QNAME.zeroPoint], output: [w + QNAME.dequantised], attribute: qdqAttrs(0) });
      n.input![1] = w + QNAME.dequantised;
      dropInit.add(w);
      if (b) {
        const qb = quantiseBias(bias!, sx, qw.scales);
        inits.push(tensor(b + '#s32', DTYPE.int32, [C], qb.values), tensor(b + QNAME.scale, DTYPE.float, [C], qb.scales), tensor(b + QNAME.zeroPoint, DTYPE.int32, [C], new Int32Array(C)));
        out.push({ name: `${b}/DequantizeLinear`, opType: 'DequantizeLinear', input: [b + '#s32', b + QNAME.scale, b + QNAME.zeroPoint], output: [b + QNAME.dequantised], attribute: qdqAttrs(0) });
        n.input![2] = b + QNAME.dequantised;
        dropInit.add(b);
      }
    }
    out.push(n);
    for (const o of n.output ?? []) if (p.marks.has(o)) out.push(quantise(o));
  }
  // A float weight read by something other than its conv stays.
  const stillRead = new Set(out.flatMap((n) => n.input ?? []));
  const keptInits = inits.filter((t) => !dropInit.has(t.name!) || stillRead.has(t.name!));
  return withGraph(m, out, keptInits);
}
