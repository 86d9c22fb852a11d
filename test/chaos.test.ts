// Chaos: `export` and `train` run as a user runs them (a separate process) and are killed at seeded random points,
// with SIGINT (Ctrl-C) and SIGKILL. Every file left complete must parse completely, an interrupt leaves no
// temporary, and a temporary left by a SIGKILL is removed by the next run of the same command (issue 9, item 6).
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { onnx } from '../src/export/proto.js';
import { SafeTensorsFile } from '../src/export/safetensors.js';
import { saveWeights } from '../src/export/weights.js';
import { rng } from '../src/graph/init.js';
import { resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FASHION_MNIST = '/usr/share/datasets/fashion-mnist';
const ELEM_SIZE: Record<number, number> = { 1: 4, 7: 8, 9: 1 };

interface Run {
  child: ChildProcess;
  pid: number;
  done: boolean;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }>;
}

/** The CLI from source (tsx), as a separate process: signals reach it as they reach a user's. */
function start(args: string[]): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'bin.ts'), ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const run: Run = {
    child,
    pid: child.pid ?? -1,
    done: false,
    exited: new Promise((resolve) => child.on('close', (code, signal) => ((run.done = true), resolve({ code, signal, err })))),
  };
  return run;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(ready: () => boolean, run: Run, what: string, timeoutMs = 90_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ready() && !run.done) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const temps = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.tmp'));

/** The whole file decodes as an ONNX ModelProto and every initializer holds all its bytes. */
function expectCompleteOnnx(path: string): void {
  const m = onnx.ModelProto.decode(readFileSync(path));
  const inits = m.graph?.initializer ?? [];
  expect(inits.length, `${path}: initializers`).toBeGreaterThan(0);
  for (const t of inits) {
    const n = (t.dims ?? []).reduce((p: number, d) => p * Number(d), 1);
    expect(t.rawData?.length, `${path}: ${t.name}`).toBe(n * (ELEM_SIZE[t.dataType ?? 1] ?? 4));
  }
}

/** The header parses, its sizes fit the file exactly, and every tensor reads. */
function expectCompleteSafeTensors(path: string): void {
  const f = SafeTensorsFile.open(path);
  try {
    const size = readFileSync(path).length;
    let end = 0;
    for (const e of f.tensors.values()) {
      end = Math.max(end, e.offset + e.byteLength);
      expect(f.readFloat32(e.name).length * 4, `${path}: ${e.name}`).toBe(e.byteLength);
    }
    expect(end, `${path}: data ends where the file does`).toBe(size);
  } finally {
    f.close();
  }
}

/**
 * One kill: `signal` at a random point after `ready()`; returns the temporaries the run left. After SIGINT there
 * must be none, and a run caught writing must exit 130 (not lose the signal); `midWrite` says whether it stops
 * within the write (removing its temporary) or after it (synchronous writes). After SIGKILL, whatever was being
 * written stays behind.
 */
async function killOnce(run: Run, signal: NodeJS.Signals, dir: string, ready: () => boolean, delayMs: number, midWrite = true): Promise<string[]> {
  await waitFor(ready, run, `${signal} round to get going`);
  await sleep(delayMs);
  const hadTemp = temps(dir).some((n) => n.includes(`.${run.pid}.`));
  run.child.kill(signal);
  const r = await run.exited;
  if (signal === 'SIGINT') {
    // 0: it had finished before the signal arrived.
    expect([130, 0], r.err).toContain(r.code);
    expect(temps(dir), `SIGINT left temporaries (${r.err})`).toEqual([]);
    if (hadTemp) {
      expect(r.code, `interrupted while writing, it exited ${r.code}`).toBe(130);
      expect(r.err).toMatch(midWrite ? /interrupted: removed .*\.tmp/ : /^interrupted \(SIGINT\)$/m);
    }
    return [];
  }
  expect(r.signal === 'SIGKILL' || r.code === 0, r.err).toBe(true);
  return temps(dir).map((n) => join(dir, n));
}

describe('chaos: kills at random points (issue 9, item 6)', () => {
  it('export: SIGINT leaves no temporary, SIGKILL\'s is removed by the next run, the model is always complete', async () => {
    const dir = tempDir('resnet-onnx-chaos-export-');
    const out = join(dir, 'model.onnx');
    const args = ['export', '--depth', '18', '-o', out, '--force', '-q'];
    const rnd = rng(9, 'chaos-export');
    let stale: string[] = [];
    let killedMidWrite = 0;
    for (const signal of ['SIGKILL', 'SIGINT', 'SIGKILL'] as NodeJS.Signals[]) {
      const run = start(args);
      const tmp = `${out}.${run.pid}.tmp`;
      const left = await killOnce(run, signal, dir, () => existsSync(tmp), rnd() * 300);
      // Each run removed what earlier killed runs left before writing its own.
      for (const s of stale) expect(existsSync(s), `${s} outlived the next run`).toBe(false);
      if (left.length) killedMidWrite++;
      stale = left;
      if (existsSync(out)) expectCompleteOnnx(out);
    }
    expect(killedMidWrite, 'no SIGKILL hit a write: nothing was tested').toBeGreaterThan(0);
    const r = await start(args).exited;
    expect(r.code, r.err).toBe(0);
    expect(temps(dir)).toEqual([]);
    expectCompleteOnnx(out);
    rmSync(dir, { recursive: true, force: true }); // ~50 MB
  }, 240_000);

  it('import: an interrupt during its synchronous write takes effect after it (exit 130), leaving no temporary', async () => {
    const dir = tempDir('resnet-onnx-chaos-import-');
    const cfg = resolveConfig({ depth: 18 });
    const source = join(dir, 'r18.safetensors');
    saveWeights(buildResNet(cfg), source, { config: JSON.stringify(cfg) });
    const out = join(dir, 'imported.onnx');
    const rnd = rng(13, 'chaos-import');
    for (let k = 0; k < 2; k++) {
      const run = start(['import', source, '-o', out, '--force', '-q']);
      const tmp = `${out}.${run.pid}.tmp`;
      await killOnce(run, 'SIGINT', dir, () => existsSync(tmp), rnd() * 200, false);
      if (existsSync(out)) expectCompleteOnnx(out);
    }
    rmSync(dir, { recursive: true, force: true }); // ~100 MB
  }, 120_000);

  const haveData = existsSync(FASHION_MNIST);
  it.skipIf(!haveData)(
    `train: checkpoints and models are complete after every kill; no temporary survives${haveData ? '' : ` (skipped: no Debian Fashion-MNIST at ${FASHION_MNIST}; apt-get install dataset-fashion-mnist)`}`,
    async () => {
      const dir = tempDir('resnet-onnx-chaos-train-');
      const runDir = join(dir, 'run');
      const checkpoint = join(runDir, 'checkpoint.safetensors');
      const model = join(runDir, 'model.onnx');
      const base = ['train', '--stages', '1', '--dataset', 'fashion-mnist', '--train-limit', '128', '--test-limit', '32', '--batch', '16', '--iterations', '12', '--checkpoint-every', '2', '--eval-every', '0', '--out', runDir, '-q'];
      const rnd = rng(11, 'chaos-train');
      let stale: string[] = [];
      for (const [k, signal] of (['SIGINT', 'SIGKILL', 'SIGINT'] as NodeJS.Signals[]).entries()) {
        // Ready once this run has written a checkpoint of its own (each atomic write is a new file).
        const inode = (): number | undefined => (existsSync(checkpoint) ? statSync(checkpoint).ino : undefined);
        const before = inode();
        const run = start(k === 0 ? base : [...base, '--force']);
        // Checkpoints are written synchronously: a signal during one takes effect after it.
        let left = await killOnce(run, signal, runDir, () => inode() !== undefined && inode() !== before, rnd() * 1000, false);
        for (const s of stale) expect(existsSync(s), `${s} outlived the next run`).toBe(false);
        if (signal === 'SIGKILL' && left.length === 0) {
          // A checkpoint takes about a millisecond to write, so a kill rarely lands inside one: leave what such a
          // kill leaves (a partial file under the dead process's name) for the next run to remove.
          const partial = `${checkpoint}.${run.pid}.tmp`;
          writeFileSync(partial, readFileSync(checkpoint).subarray(0, 1000));
          left = [partial];
        }
        stale = left;
        if (existsSync(checkpoint)) expectCompleteSafeTensors(checkpoint);
        if (existsSync(model)) expectCompleteOnnx(model);
      }
      const r = await start([...base, '--force']).exited;
      expect(r.code, r.err).toBe(0);
      for (const s of stale) expect(existsSync(s), `${s} outlived the next run`).toBe(false);
      expect(temps(runDir)).toEqual([]);
      expectCompleteSafeTensors(checkpoint);
      expectCompleteOnnx(model);
    },
    240_000,
  );
});
