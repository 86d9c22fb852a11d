// Shared test utilities: temp dirs, seeded inputs, onnxruntime runs, realistic BN statistics.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { expect, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { onnx } from '../src/export/proto.js';
import { SafeTensorsFile } from '../src/export/safetensors.js';
import type { Graph } from '../src/graph/graph.js';
import { rng } from '../src/graph/init.js';
import { floatTensor } from '../src/graph/types.js';

/** The real Lua Torch files in shared/ (beside the checkout, as in CI; /work/shared on the developers' machines). */
export const T7_FIXTURES = [join(fileURLToPath(new URL('..', import.meta.url)), '..', 'shared', 'fixtures', 't7'), '/work/shared/fixtures/t7'].find((d) => existsSync(d)) ?? '../shared/fixtures/t7';

export function tempDir(prefix = 'resnet-onnx-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function seededInput(count: number, seed = 1): Float32Array {
  const u = rng(seed, 'input');
  return Float32Array.from({ length: count }, () => 2 * u() - 1);
}

export async function runOnnx(path: string, input: Float32Array, dims: number[], output = 'logits'): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 2 });
  try {
    const out = await session.run({ input: new ort.Tensor('float32', input, dims) });
    return { data: out[output].data as Float32Array, dims: out[output].dims };
  } finally {
    await session.release();
  }
}

/**
 * Replaces BN statistics and affine parameters by random but sane values (as after training), so that
 * folding is exercised and activations stay in a normal range. `residualScale` shrinks each unit's last
 * conv, which keeps random-init networks of 1000+ layers finite in inference mode.
 */
export function withTrainedLikeStats(g: Graph, seed = 3, residualScale = 1): Graph {
  const lastConv = /\.unit\d+\.conv([23])\.weight$/;
  return {
    ...g,
    initializers: g.initializers.map((init) => {
      const n = init.data.dims.reduce((p, d) => p * d, 1);
      const u = rng(seed, init.name);
      const gen = (f: () => number) => floatTensor(init.data.dims, Float32Array.from({ length: n }, f));
      if (/\.running_var$/.test(init.name)) return { ...init, data: gen(() => 0.5 + 1.5 * u()) };
      if (/\.running_mean$/.test(init.name)) return { ...init, data: gen(() => 0.2 * (u() - 0.5)) };
      if (/bn\d?\.weight$/.test(init.name)) return { ...init, data: gen(() => 0.5 + u()) };
      if (/bn\d?\.bias$/.test(init.name)) return { ...init, data: gen(() => 0.2 * (u() - 0.5)) };
      if (residualScale !== 1 && lastConv.test(init.name)) {
        const src = init.data.values() as Float32Array;
        return { ...init, data: floatTensor(init.data.dims, src.map((v) => v * residualScale)) };
      }
      return init;
    }),
  };
}

export function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

/** max |a - b| / max(1, max |b|): the relative error used throughout the tests. */
export function relDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m / Math.max(1, maxAbs(b));
}

/** Runs the CLI in this process, capturing what it prints (console and the standard streams). */
export async function runCli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const spies = [
    vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' '))),
    vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' '))),
    vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (err.push(String(s)), true)),
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true)),
  ];
  try {
    const code = await main(['node', 'resnet-onnx', ...args]);
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    for (const s of spies) s.mockRestore();
  }
}

/** Debian's python3, which has torch, onnx and cv2 (another python3 may shadow it on PATH). */
export const PYTHON = '/usr/bin/python3';

/** Runs a Python reference script; rejects with what it printed. */
export function python(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(PYTHON, args, { maxBuffer: 1 << 24, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${args[0]} failed: ${stderr || stdout || err.message}`));
      else resolve();
    });
  });
}

/** A raw little-endian float32 file. */
export function readFloats(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

/** An ONNX file's metadata_props. */
export function metadataOf(path: string): Record<string, string> {
  const m = onnx.ModelProto.decode(readFileSync(path));
  return Object.fromEntries((m.metadataProps ?? []).map((p) => [p.key ?? '', p.value ?? '']));
}

/** Runs `model` on each input and checks its logits against a reference's raw float32 file, to `tol` relative. */
export async function expectMatchesReference(model: string, inputs: readonly { x: Float32Array; shape: number[] }[], refs: readonly string[], label: string, tol: number): Promise<void> {
  for (const [k, inp] of inputs.entries()) {
    const got = (await runOnnx(model, inp.x, inp.shape)).data;
    const ref = readFloats(refs[k]);
    expect(got.length).toBe(ref.length);
    const rel = relDiff(got, ref);
    expect(rel, `${label} @ ${inp.shape.join('x')}: relative difference ${rel.toExponential(2)}`).toBeLessThanOrEqual(tol);
  }
}

/**
 * Fuzzes an importer: `flips` copies of `bytes`, each with the byte at `pickAt()` replaced or one of its bits
 * flipped, then `truncations` random prefixes, each through `outcome` (which must itself throw on anything but a
 * clean error). Every truncation must be a clean error, and some flips must be.
 */
export function fuzzBytes(bytes: Uint8Array, rnd: () => number, pickAt: () => number, outcome: (b: Uint8Array) => 'ok' | 'error', flips: number, truncations: number): void {
  const counts = { ok: 0, error: 0 };
  for (let k = 0; k < flips; k++) {
    const b = Uint8Array.from(bytes);
    const at = pickAt();
    b[at] = rnd() < 0.5 ? Math.floor(rnd() * 256) : b[at] ^ (1 << Math.floor(rnd() * 8));
    counts[outcome(b)]++;
  }
  for (let k = 0; k < truncations; k++) expect(outcome(bytes.subarray(0, Math.floor(rnd() * bytes.length)))).toBe('error');
  expect(counts.error).toBeGreaterThan(0);
}

/** The tensors of a training step's state file (names = the graph's state inputs), as onnxruntime feeds. */
export function stateFeeds(path: string): { feeds: Record<string, ort.Tensor>; names: string[] } {
  const file = SafeTensorsFile.open(path);
  const feeds: Record<string, ort.Tensor> = {};
  try {
    for (const [name, e] of file.tensors) feeds[name] = new ort.Tensor('float32', file.readFloat32(name), [...e.shape]);
  } finally {
    file.close();
  }
  return { feeds, names: Object.keys(feeds) };
}
