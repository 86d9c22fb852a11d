// Child of bench/train.ts: times training steps of our ONNX training-step graph in onnxruntime-node.
// Usage: node --import tsx bench/ort_train.ts CONFIG_JSON BATCH SIZE STEPS THREADS [--profile]
// Prints one JSON line: step times after 3 warm-up steps (seconds), their median and images/s; with --profile,
// one more step runs with onnxruntime's profiler and the line also gives kernel milliseconds per part of the step.

import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { encodeOnnx } from '../src/export/onnx.js';
import { NEXT_SUFFIX, buildTrainingStep } from '../src/export/training.js';
import type { Graph } from '../src/graph/graph.js';
import { configFromJson } from '../src/models/config.js';

const [cfgPath, batchS, sizeS, stepsS, threadsS, flag] = process.argv.slice(2);
const profile = flag === '--profile';
const cfg = configFromJson(readFileSync(cfgPath, 'utf8'));
const [batch, size, steps, threads] = [batchS, sizeS, stepsS, threadsS].map(Number);
// As `resnet-onnx train --ep cpu` builds it.
const { graph, state } = buildTrainingStep(cfg, { batch, size, target: 'onnxruntime-cpu' });
const profDir = profile ? mkdtempSync(join(tmpdir(), 'ort-train-prof-')) : '';
const session = await ort.InferenceSession.create(encodeOnnx(graph), {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
  ...(profile ? { enableProfiling: true, profileFilePrefix: join(profDir, 'step') } : {}),
});
const feeds: Record<string, ort.Tensor> = {
  input: new ort.Tensor('float32', Float32Array.from({ length: batch * cfg.inChannels * size * size }, () => Math.random() * 2 - 1), [batch, cfg.inChannels, size, size]),
  labels: new ort.Tensor('int64', BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % cfg.classes)), [batch]),
  lr: new ort.Tensor('float32', Float32Array.of(0.1), []),
};
for (const s of state) feeds[s.name] = new ort.Tensor('float32', s.data.values() as Float32Array, [...s.data.dims]);
const times: number[] = [];
const runs = 3 + steps + (profile ? 1 : 0);
for (let i = 0; i < runs; i++) {
  const t = performance.now();
  const out = await session.run(feeds);
  for (const s of state) feeds[s.name] = out[`${s.name}${NEXT_SUFFIX}`];
  if (i >= 3 && i < 3 + steps) times.push((performance.now() - t) / 1000);
}
const med = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
const result: Record<string, unknown> = { times_s: times, median_s: med, images_per_s: batch / med };
if (profile) {
  session.endProfiling();
  const file = join(profDir, readdirSync(profDir)[0]);
  const events = JSON.parse(readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number }[];
  rmSync(profDir, { recursive: true });
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const last = kernels.slice(kernels.length - kernels.length / runs);
  const ms: Record<string, number> = {};
  const part = partOf(graph);
  for (const e of last) {
    const p = part(e.name.replace(/_kernel_time$/, '').split('/')[0]);
    ms[p] = (ms[p] ?? 0) + e.dur / 1000;
  }
  result.profile_ms = ms;
}
console.log(JSON.stringify(result));

/** Which part of the step a node belongs to, from its name: the scope of the forward node it differentiates. */
function partOf(g: Graph): (name: string) => string {
  const convs = g.nodes.filter((n) => n.op === 'Conv' && !n.name.startsWith('grad.')).map((n) => n.name);
  const bns = new Set(g.nodes.filter((n) => n.op === 'BatchNormalization' && !n.name.startsWith('grad.')).map((n) => n.name.replace(/\.normalise$/, '')));
  const relus = new Set(g.nodes.filter((n) => n.op === 'Relu' && !n.name.startsWith('grad.')).map((n) => n.name));
  const under = (name: string, scope: string): boolean => name === scope || name.startsWith(`${scope}.`);
  return (name) => {
    if (name.startsWith('sgd.')) return 'SGD update';
    const grad = name.startsWith('grad.');
    const fwd = grad ? name.slice(5) : name;
    const conv = convs.find((c) => under(fwd, c));
    if (conv) {
      if (!grad) return 'conv forward';
      return /^(dx|w_t|w_flip)(_\d+)?$/.test(fwd.slice(conv.length + 1)) ? 'conv backward: dX' : 'conv backward: dW';
    }
    for (const bn of bns) if (under(fwd, bn)) return grad ? 'BN backward' : 'BN forward';
    for (const r of relus) if (under(fwd, r)) return 'ReLU forward and backward';
    return 'other';
  };
}
