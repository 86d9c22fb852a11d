// Training throughput and peak memory: our training-step graph in onnxruntime-node against PyTorch CPU
// (autograd + torch.optim.SGD) on the same network, same batch and threads, measured in this run.
// Usage: npx tsx bench/train.ts [--depth 110] [--batch 128] [--steps 10] [--threads 2]

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveConfig } from '../src/models/config.js';

const { values } = parseArgs({
  options: { depth: { type: 'string', default: '110' }, batch: { type: 'string', default: '128' }, steps: { type: 'string', default: '10' }, threads: { type: 'string', default: '2' } },
});
const out = join('bench', 'out');
mkdirSync(out, { recursive: true });
const cfg = resolveConfig({ depth: Number(values.depth) });
const cfgPath = join(out, `train-config${values.depth}.json`);
writeFileSync(cfgPath, JSON.stringify(cfg));
const size = cfg.family === 'imagenet' ? 224 : 32;

function timed(cmd: string, args: string[]): { result: { median_s: number; images_per_s: number }; peakMb: number } {
  const timeFile = join(out, 'train-time.txt');
  const stdout = execFileSync('/usr/bin/time', ['-o', timeFile, '-f', '%M', cmd, ...args], { encoding: 'utf8' });
  const kb = Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop());
  return { result: JSON.parse(stdout.trim().split('\n').pop()!) as { median_s: number; images_per_s: number }, peakMb: kb / 1024 };
}

const torch = timed('/usr/bin/python3', ['bench/torch_train.py', '--config', cfgPath, '--batch', values.batch!, '--size', String(size), '--steps', values.steps!, '--threads', values.threads!]);
const ours = timed(process.execPath, ['--import', 'tsx', 'bench/ort_train.ts', cfgPath, values.batch!, String(size), values.steps!, values.threads!]);
console.log(`ResNet-${values.depth} training, batch ${values.batch}, ${size}x${size}, ${values.threads} threads, median of ${values.steps} steps after 3 warm-up steps`);
console.log('| trainer | s / step | images/s | peak RSS | speed vs PyTorch |');
console.log('| --- | --- | --- | --- | --- |');
for (const [name, r] of [['PyTorch CPU (autograd + SGD), baseline', torch], ['resnet-onnx training graph, onnxruntime-node', ours]] as const)
  console.log(`| ${name} | ${r.result.median_s.toFixed(3)} | ${r.result.images_per_s.toFixed(1)} | ${r.peakMb.toFixed(0)} MB | ${(r.result.images_per_s / torch.result.images_per_s).toFixed(2)}x |`);
