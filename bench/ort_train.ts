// Child of bench/train.ts: times training steps of our ONNX training-step graph in onnxruntime-node.
// Usage: node --import tsx bench/ort_train.ts CONFIG_JSON BATCH SIZE STEPS THREADS

import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { encodeOnnx } from '../src/export/onnx.js';
import { NEXT_SUFFIX, buildTrainingStep } from '../src/export/training.js';
import { configFromJson } from '../src/models/config.js';

const [cfgPath, batchS, sizeS, stepsS, threadsS] = process.argv.slice(2);
const cfg = configFromJson(readFileSync(cfgPath, 'utf8'));
const [batch, size, steps, threads] = [batchS, sizeS, stepsS, threadsS].map(Number);
const { graph, state } = buildTrainingStep(cfg, { batch, size });
const session = await ort.InferenceSession.create(encodeOnnx(graph), { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
const feeds: Record<string, ort.Tensor> = {
  input: new ort.Tensor('float32', Float32Array.from({ length: batch * cfg.inChannels * size * size }, () => Math.random() * 2 - 1), [batch, cfg.inChannels, size, size]),
  labels: new ort.Tensor('int64', BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % cfg.classes)), [batch]),
  lr: new ort.Tensor('float32', Float32Array.of(0.1), []),
};
for (const s of state) feeds[s.name] = new ort.Tensor('float32', s.data.values() as Float32Array, [...s.data.dims]);
const times: number[] = [];
for (let i = 0; i < 3 + steps; i++) {
  const t = performance.now();
  const out = await session.run(feeds);
  for (const s of state) feeds[s.name] = out[`${s.name}${NEXT_SUFFIX}`];
  if (i >= 3) times.push((performance.now() - t) / 1000);
}
times.sort((a, b) => a - b);
const med = times[Math.floor(times.length / 2)];
console.log(JSON.stringify({ median_s: med, images_per_s: batch / med }));
