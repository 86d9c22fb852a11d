// Inference optimisation: fold each BatchNormalization that reads a Conv's only consumer into that Conv.
// Graph in, Graph out; folded weights are computed lazily when the file is written.

import { type Graph, type Initializer, consumers, producers } from '../graph/graph.js';
import type { Attr } from '../graph/ops.js';
import { floatTensor } from '../graph/types.js';

export interface FoldResult {
  graph: Graph;
  /** Names of the BatchNormalization nodes that were folded. */
  folded: string[];
}

export function foldBatchNorms(g: Graph): FoldResult {
  const readers = consumers(g);
  const made = producers(g);
  const inits = new Map(g.initializers.map((i) => [i.name, i]));
  const graphOutputs = new Set(g.outputs.map((o) => o.name));
  const replacedConv = new Map<string, { inputs: string[]; output: string }>();
  const droppedNodes = new Set<string>();
  const newInits = new Map<string, Initializer>();
  const addedBias = new Map<string, Initializer>();
  const folded: string[] = [];

  for (const bn of g.nodes) {
    if (bn.op !== 'BatchNormalization' || bn.outputs.length !== 1) continue;
    const training = bn.attrs.training_mode as Attr | undefined;
    if (training && training.value !== 0) continue;
    const convNode = made.get(bn.inputs[0]);
    if (!convNode || convNode.op !== 'Conv') continue;
    if ((readers.get(convNode.outputs[0]) ?? []).length !== 1 || graphOutputs.has(convNode.outputs[0])) continue;
    const [wName, bName] = [convNode.inputs[1], convNode.inputs[2] ?? ''];
    const params = [wName, bName, ...bn.inputs.slice(1)].filter((n) => n).map((n) => inits.get(n));
    if (params.some((p) => p === undefined)) continue; // weights fed at run time cannot be folded ahead of time
    const w = inits.get(wName)!;
    const bias = bName ? inits.get(bName) : undefined;
    const [gamma, beta, mean, variance] = bn.inputs.slice(1).map((n) => inits.get(n)!);
    const eps = (bn.attrs.epsilon?.value as number | undefined) ?? 1e-5;
    const out = w.data.dims[0];
    const perOut = w.data.dims.slice(1).reduce((p, d) => p * d, 1);

    const scale = (): Float32Array => {
      const gm = gamma.data.values() as Float32Array;
      const v = variance.data.values() as Float32Array;
      const s = new Float32Array(out);
      for (let c = 0; c < out; c++) s[c] = gm[c] / Math.sqrt(v[c] + eps);
      return s;
    };
    const foldedW = floatTensor(w.data.dims, () => {
      const src = w.data.values() as Float32Array;
      const s = scale();
      const dst = new Float32Array(src.length);
      for (let c = 0; c < out; c++) for (let i = 0; i < perOut; i++) dst[c * perOut + i] = src[c * perOut + i] * s[c];
      return dst;
    });
    const foldedB = floatTensor([out], () => {
      const s = scale();
      const m = mean.data.values() as Float32Array;
      const bt = beta.data.values() as Float32Array;
      const b0 = bias ? (bias.data.values() as Float32Array) : new Float32Array(out);
      const dst = new Float32Array(out);
      for (let c = 0; c < out; c++) dst[c] = (b0[c] - m[c]) * s[c] + bt[c];
      return dst;
    });
    const newB = bName || `${convNode.name}.bias`;
    newInits.set(wName, { ...w, data: foldedW });
    const biasInit: Initializer = { name: newB, role: 'param', decay: false, data: foldedB };
    if (bName) newInits.set(newB, biasInit);
    else addedBias.set(wName, biasInit);
    replacedConv.set(convNode.name, { inputs: [convNode.inputs[0], wName, newB], output: bn.outputs[0] });
    droppedNodes.add(bn.name);
    folded.push(bn.name);
  }

  const nodes = g.nodes
    .filter((n) => !droppedNodes.has(n.name))
    .map((n) => {
      const r = replacedConv.get(n.name);
      return r ? { ...n, inputs: r.inputs, outputs: [r.output] } : n;
    });
  const used = new Set(nodes.flatMap((n) => n.inputs));
  const initializers: Initializer[] = [];
  for (const i of g.initializers) {
    if (!used.has(i.name)) continue;
    initializers.push(newInits.get(i.name) ?? i);
    // A conv that had no bias gets one right after its weight, keeping the file in layer order.
    const added = addedBias.get(i.name);
    if (added) initializers.push(added);
  }
  const types = new Map(g.types);
  for (const init of [...newInits.values(), ...addedBias.values()]) types.set(init.name, { dtype: 'float32', shape: init.data.dims });
  return { graph: { ...g, nodes, initializers, types }, folded };
}
