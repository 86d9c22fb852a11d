// Training throughput and peak memory: our training-step graph in onnxruntime-node against PyTorch CPU
// (autograd + torch.optim.SGD) on the same network, same batch and threads, measured in this run.
// The two alternate, one process each per round, so a slow phase of a shared machine does not fall on one alone;
// the figure is the median of all steps of all rounds. --profile adds one profiled step of each, split by part.
// Usage: npx tsx bench/train.ts [--depth 110] [--batch 128] [--steps 10] [--rounds 2] [--threads 2] [--profile]

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveConfig } from '../src/models/config.js';

const { values } = parseArgs({
  options: {
    depth: { type: 'string', default: '110' },
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    threads: { type: 'string', default: '2' },
    profile: { type: 'boolean', default: false },
  },
});
const out = join('bench', 'out');
mkdirSync(out, { recursive: true });
const cfg = resolveConfig({ depth: Number(values.depth) });
const cfgPath = join(out, `train-config${values.depth}.json`);
writeFileSync(cfgPath, JSON.stringify(cfg));
const size = cfg.family === 'imagenet' ? 224 : 32;

interface Run {
  times_s: number[];
  profile_ms?: Record<string, number>;
}

function timed(cmd: string, args: string[]): { result: Run; peakMb: number } {
  const timeFile = join(out, 'train-time.txt');
  const stdout = execFileSync('/usr/bin/time', ['-o', timeFile, '-f', '%M', cmd, ...args], { encoding: 'utf8' });
  const kb = Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop());
  return { result: JSON.parse(stdout.trim().split('\n').pop()!) as Run, peakMb: kb / 1024 };
}

const torchRun = (profile: boolean) =>
  timed('/usr/bin/python3', ['bench/torch_train.py', '--config', cfgPath, '--batch', values.batch!, '--size', String(size), '--steps', values.steps!, '--threads', values.threads!, ...(profile ? ['--profile'] : [])]);
const oursRun = (profile: boolean) =>
  timed(process.execPath, ['--import', 'tsx', 'bench/ort_train.ts', cfgPath, values.batch!, String(size), values.steps!, values.threads!, ...(profile ? ['--profile'] : [])]);

const trainers = [
  { name: 'PyTorch CPU (autograd + SGD), baseline', run: torchRun, times: [] as number[], peakMb: 0 },
  { name: 'resnet-onnx training graph, onnxruntime-node', run: oursRun, times: [] as number[], peakMb: 0 },
];
for (let r = 0; r < Number(values.rounds); r++) {
  for (const t of trainers) {
    const { result, peakMb } = t.run(false);
    t.times.push(...result.times_s);
    t.peakMb = Math.max(t.peakMb, peakMb);
  }
}
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const batch = Number(values.batch);
const base = batch / median(trainers[0].times);
console.log(`ResNet-${values.depth} training, batch ${batch}, ${size}x${size}, ${values.threads} threads; ${values.rounds} alternating rounds of ${values.steps} steps after 3 warm-up steps, median step`);
console.log('| trainer | s / step | images/s | peak RSS | speed vs PyTorch |');
console.log('| --- | --- | --- | --- | --- |');
for (const t of trainers) {
  const s = median(t.times);
  console.log(`| ${t.name} | ${s.toFixed(3)} | ${(batch / s).toFixed(1)} | ${t.peakMb.toFixed(0)} MB | ${(batch / s / base).toFixed(2)}x |`);
}

if (values.profile) {
  // One profiled step each (profilers add overhead; the shares are what to read, scaled to the median step).
  const profiles = trainers.map((t) => t.run(true).result.profile_ms!);
  const parts = ['conv forward', 'conv backward: dX', 'conv backward: dW', 'conv backward (dX and dW)', 'BN forward', 'BN backward', 'ReLU forward and backward', 'SGD update', 'other'];
  const totals = profiles.map((p) => Object.values(p).reduce((a, b) => a + b, 0));
  console.log('\nWhere a step goes (one profiled step each; ms scaled to the median step above, share of the profiled step)');
  console.log('| part | PyTorch | resnet-onnx |');
  console.log('| --- | --- | --- |');
  const cell = (i: number, part: string): string => {
    const v = profiles[i][part];
    if (v === undefined) return '';
    return `${((v / totals[i]) * median(trainers[i].times) * 1000).toFixed(0)} ms (${((100 * v) / totals[i]).toFixed(0)}%)`;
  };
  for (const part of parts) if (profiles.some((p) => p[part] !== undefined)) console.log(`| ${part} | ${cell(0, part)} | ${cell(1, part)} |`);
}
