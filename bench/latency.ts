// Inference latency of our ResNet-200 export in onnxruntime-node at the paper's 1x3x320x320 test crop,
// against the same network in PyTorch CPU eager and PyTorch's own ONNX export, all measured in this run.
// Usage: npx tsx bench/latency.ts [--depth 200] [--size 320] [--runs 20] [--threads 2]

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';

const { values } = parseArgs({
  options: { depth: { type: 'string', default: '200' }, size: { type: 'string', default: '320' }, runs: { type: 'string', default: '20' }, threads: { type: 'string', default: '2' } },
});
const depth = Number(values.depth);
const size = Number(values.size);
const runs = Number(values.runs);
const threads = Number(values.threads);
const out = join('bench', 'out');
mkdirSync(out, { recursive: true });

async function timeOrt(path: string): Promise<number[]> {
  const session = await ort.InferenceSession.create(path, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const x = new ort.Tensor('float32', Float32Array.from({ length: 3 * size * size }, () => Math.random() * 2 - 1), [1, 3, size, size]);
  const times: number[] = [];
  for (let i = 0; i < 3 + runs; i++) {
    const t = performance.now();
    await session.run({ input: x });
    if (i >= 3) times.push((performance.now() - t) / 1000);
  }
  await session.release();
  return times;
}

const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

const cfg = resolveConfig({ depth });
const cfgPath = join(out, `config${depth}.json`);
writeFileSync(cfgPath, JSON.stringify(cfg));
const folded = join(out, `resnet${depth}.onnx`);
const unfolded = join(out, `resnet${depth}-unfolded.onnx`);
const torchOnnx = join(out, `resnet${depth}-torch.onnx`);
exportInference(cfg, { output: folded });
exportInference(cfg, { output: unfolded, fold: false });

const torchRun = JSON.parse(
  execFileSync('/usr/bin/python3', ['bench/torch_latency.py', '--config', cfgPath, '--size', String(size), '--runs', String(runs), '--threads', String(threads), '--onnx-out', torchOnnx], {
    encoding: 'utf8',
  }).trim(),
) as { median_s: number; torch: string };

const rows: [string, number][] = [
  ['PyTorch eager (baseline)', torchRun.median_s],
  ['ours, BN folded (default)', median(await timeOrt(folded))],
  ['ours, --no-fold', median(await timeOrt(unfolded))],
  ['torch.onnx.export of the same net', median(await timeOrt(torchOnnx))],
];
console.log(`ResNet-${depth}, 1x3x${size}x${size}, ${threads} threads, median of ${runs} runs (onnxruntime-node ${ort.env.versions.common}, PyTorch ${torchRun.torch})`);
console.log('| runtime | median latency | vs PyTorch eager |');
console.log('| --- | --- | --- |');
for (const [name, s] of rows) console.log(`| ${name} | ${(s * 1000).toFixed(1)} ms | ${(torchRun.median_s / s).toFixed(2)}x speed |`);
