// Export time and peak memory of the largest models (`resnet-onnx export`, a fresh process each), against
// torch.onnx.export of the same network measured in this run. Needs `npm run build` first.
// Usage: npx tsx bench/export.ts

import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveConfig } from '../src/models/config.js';

const out = join('bench', 'out');
mkdirSync(out, { recursive: true });

// torch 1.13's exporter slows down sharply with graph size (ResNet-1001 ran past 12 minutes once); cap it.
const TORCH_LIMIT_S = Number(process.env.TORCH_LIMIT_S ?? 300);

/** Runs a command under GNU time; returns wall seconds and peak RSS in MB, or null past `limitS`. */
function measure(cmd: string, args: string[], limitS = 3600): { seconds: number; peakMb: number } | null {
  const timeFile = join(out, 'time.txt');
  try {
    execFileSync('timeout', [String(limitS), '/usr/bin/time', '-o', timeFile, '-f', '%e %M', cmd, ...args], { encoding: 'utf8' });
  } catch (e) {
    if ((e as { status?: number }).status === 124) return null;
    throw e;
  }
  const [secs, kb] = execFileSync('tail', ['-1', timeFile], { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
  return { seconds: secs, peakMb: kb / 1024 };
}

console.log('| model | file | ours: time | ours: peak RSS | torch.onnx.export: time | its peak RSS | time ratio | memory ratio |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const [depth, size] of [[200, 224], [1001, 32], [1202, 32]]) {
  const cfg = resolveConfig({ depth });
  const cfgPath = join(out, `config${depth}.json`);
  writeFileSync(cfgPath, JSON.stringify(cfg));
  const ours = measure('node', ['dist/src/cli/bin.js', 'export', '--depth', String(depth), '-o', join(out, `export${depth}.onnx`), '-q'])!;
  const bytes = statSync(join(out, `export${depth}.onnx`)).size;
  const torchPath = join(out, `export${depth}-torch.onnx`);
  const torch = measure('/usr/bin/python3', ['bench/torch_export.py', '--config', cfgPath, '--size', String(size), '--out', torchPath], TORCH_LIMIT_S);
  const t = torch
    ? `${torch.seconds.toFixed(1)} s | ${torch.peakMb.toFixed(0)} MB | ${(torch.seconds / ours.seconds).toFixed(1)}x faster | ${(torch.peakMb / ours.peakMb).toFixed(1)}x less`
    : `> ${TORCH_LIMIT_S} s (stopped) | - | > ${(TORCH_LIMIT_S / ours.seconds).toFixed(0)}x faster | -`;
  console.log(`| ResNet-${depth} | ${(bytes / 1e6).toFixed(0)} MB | ${ours.seconds.toFixed(1)} s | ${ours.peakMb.toFixed(0)} MB | ${t} |`);
}
