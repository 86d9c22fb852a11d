// Numerical parity of our ONNX exports against independent references:
//   - test/reference/preact_torch.py, a PyTorch implementation of the family written from the paper, loading
//     the same checkpoint (float64, eval mode);
//   - onnx's checker (full_check) on every export, and OpenCV 4.6's DNN module as a second runtime
//     (test/reference/onnx_check.py).
// For each network: random but sane BN parameters and running statistics (so that folding matters and
// activations stay bounded), a checkpoint, exports with and without BN folding, onnxruntime-node on a seeded
// input, and max |onnxruntime - reference| <= 1e-4 * max(1, max |reference|).

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { saveWeights } from '../src/export/weights.js';
import type { Graph } from '../src/graph/graph.js';
import { floatTensor } from '../src/graph/types.js';
import { type ModelRequest, type ResNetConfig, resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';

const PYTHON = '/usr/bin/python3'; // Debian's, with torch 1.13, onnx 1.12, cv2 4.6 (another python3 may shadow it)
const TORCH_REF = fileURLToPath(new URL('./reference/preact_torch.py', import.meta.url));
const ONNX_CHECK = fileURLToPath(new URL('./reference/onnx_check.py', import.meta.url));
const REL_TOL = 1e-4;

// ---------------------------------------------------------------------------------------------------------
// Seeded random numbers

function hashString(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

/** mulberry32: small, seeded, good enough for test data. */
function rng(seed: number): { uniform: (lo: number, hi: number) => number; normal: (mean: number, std: number) => number } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    uniform: (lo, hi) => lo + (hi - lo) * next(),
    normal: (mean, std) => mean + std * Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()),
  };
}

function fill(n: number, f: () => number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = f();
  return v;
}

// ---------------------------------------------------------------------------------------------------------
// Weights: the builder's He init (seed 1, so it differs from the export's own seed-0 init and a checkpoint that
// failed to load shows), with random BN parameters/statistics, random biases and damped residual branches.

/** How many convs a unit's residual branch has; the last one is damped. */
function branchDepth(cfg: ResNetConfig): number {
  return cfg.unit === 'bottleneck' ? 3 : cfg.unit === 'basic' ? 2 : 1;
}

function randomizedGraph(cfg: ResNetConfig, seed: number): Graph {
  const g = buildResNet(cfg, { seed: 1 });
  const r = rng(seed);
  const bnPrefixes = new Set(g.initializers.filter((i) => i.name.endsWith('.running_mean')).map((i) => i.name.slice(0, -'.running_mean'.length)));
  const lastConv = new RegExp(`^stage\\d+\\.unit\\d+\\.conv${branchDepth(cfg)}\\.weight$`);
  // Without damping, each pre-activation unit roughly doubles the signal's variance (BN uses fixed running
  // statistics, not the batch's), and ResNet-164's logits reach ~1e7.
  const DAMP = 0.5;
  const initializers = g.initializers.map((init) => {
    if (init.role === 'constant') return init;
    const n = init.data.dims.reduce((p, d) => p * d, 1);
    const dot = init.name.lastIndexOf('.');
    const prefix = init.name.slice(0, dot);
    const leaf = init.name.slice(dot + 1);
    let values: Float32Array | null = null;
    if (bnPrefixes.has(prefix)) {
      if (leaf === 'weight') values = fill(n, () => r.uniform(0.5, 1.5));
      else if (leaf === 'bias') values = fill(n, () => r.normal(0, 0.1));
      else if (leaf === 'running_mean') values = fill(n, () => r.normal(0, 0.1));
      else if (leaf === 'running_var') values = fill(n, () => r.uniform(0.5, 2));
      else throw new Error(`unexpected BN tensor ${init.name}`);
    } else if (lastConv.test(init.name)) {
      values = (init.data.values() as Float32Array).map((v) => v * DAMP);
    } else if (leaf === 'bias') {
      // FC bias and gate biases (around the configured b_g)
      const base = prefix.endsWith('.gate') ? cfg.shortcut.gateBias : 0;
      values = fill(n, () => r.normal(base, prefix.endsWith('.gate') ? 0.5 : 0.1));
    }
    return values ? { ...init, data: floatTensor(init.data.dims, values) } : init;
  });
  return { ...g, initializers };
}

// ---------------------------------------------------------------------------------------------------------
// Running the references

function run(cmd: string, args: string[], what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${what} failed (exit ${err.code ?? err.signal}):\n${stderr || stdout || err.message}`));
      else resolve(stdout);
    });
  });
}

function readFloats(path: string): Float32Array {
  const buf = readFileSync(path);
  const out = new Float32Array(buf.length / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

function writeFloats(path: string, v: Float32Array): void {
  writeFileSync(path, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
}

async function torchReference(name: string, cfgPath: string, weights: string, input: string, shape: number[], output: string): Promise<Float32Array> {
  await run(PYTHON, [TORCH_REF, '--config', cfgPath, '--weights', weights, '--input', input, '--shape', shape.join(','), '--output', output], `${name}: PyTorch reference`);
  return readFloats(output);
}

async function onnxCheck(name: string, model: string, opencv?: { input: string; shape: number[]; output: string }): Promise<Float32Array | null> {
  const args = [ONNX_CHECK, model];
  if (opencv) args.push('--input', opencv.input, '--shape', opencv.shape.join(','), '--opencv-output', opencv.output);
  await run(PYTHON, args, `${name}: onnx_check.py`);
  return opencv ? readFloats(opencv.output) : null;
}

async function runOrt(model: string, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model);
  try {
    const out = await session.run({ input: new ort.Tensor('float32', x, shape) });
    return out.logits.data as Float32Array;
  } finally {
    await session.release();
  }
}

interface Diff {
  maxDiff: number;
  maxRef: number;
  tol: number;
}

function difference(a: Float32Array, b: Float32Array): Diff {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) maxDiff = Infinity; // a NaN anywhere fails the comparison
    else if (d > maxDiff) maxDiff = d;
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return { maxDiff, maxRef, tol: REL_TOL * Math.max(1, maxRef) };
}

const observed: string[] = [];

function expectClose(label: string, got: Float32Array, ref: Float32Array, refName: string, gotName: string): void {
  expect(got.length, `${label}: ${gotName} gave ${got.length} values, ${refName} ${ref.length}`).toBe(ref.length);
  const d = difference(got, ref);
  observed.push(`${label}: ${gotName} vs ${refName}: max|diff| ${d.maxDiff.toExponential(2)}, max|ref| ${d.maxRef.toExponential(2)}, rel ${(d.maxDiff / Math.max(1, d.maxRef)).toExponential(2)}`);
  expect(
    d.maxDiff,
    `${label}: max |${gotName} - ${refName}| = ${d.maxDiff.toExponential(3)} exceeds ${d.tol.toExponential(3)} (relative ${REL_TOL} of max |${refName}| = ${d.maxRef.toExponential(3)})`,
  ).toBeLessThanOrEqual(d.tol);
}

// ---------------------------------------------------------------------------------------------------------
// The cases

interface Case {
  name: string;
  req: ModelRequest;
  /** Input shapes [N, C, H, W] to run each export at (the exports have symbolic N, H, W). */
  shapes: number[][];
  /** Compare OpenCV's output with onnxruntime's (at the first shape, both exports); default true. */
  opencv?: boolean;
  timeout: number;
}

const CIFAR = [[2, 3, 32, 32]];
const CASES: Case[] = [
  { name: 'CIFAR ResNet-20 option A', req: { depth: 20 }, shapes: CIFAR, timeout: 60_000 },
  { name: 'CIFAR ResNet-20 option B', req: { depth: 20, projection: 'B' }, shapes: CIFAR, timeout: 60_000 },
  { name: 'CIFAR ResNet-164 (bottleneck)', req: { depth: 164 }, shapes: CIFAR, timeout: 120_000 },
  { name: 'CIFAR-100 ResNet-20 (1-layer units)', req: { depth: 20, unit: 'single', dataset: 'cifar100' }, shapes: CIFAR, timeout: 60_000 },
  { name: 'ImageNet ResNet-50', req: { depth: 50 }, shapes: [[1, 3, 224, 224], [1, 3, 320, 320]], timeout: 180_000 },
  { name: 'ImageNet ResNet-18 (basic)', req: { depth: 18 }, shapes: [[1, 3, 224, 224], [1, 3, 199, 258]], timeout: 120_000 },
  { name: "ResNet-20 'original' (Fig. 4a)", req: { depth: 20, activation: 'original' }, shapes: CIFAR, timeout: 60_000 },
  { name: "ResNet-20 'bn-after-add' (Fig. 4b)", req: { depth: 20, activation: 'bn-after-add' }, shapes: CIFAR, timeout: 60_000 },
  { name: "ResNet-20 'relu-before-add' (Fig. 4c)", req: { depth: 20, activation: 'relu-before-add' }, shapes: CIFAR, timeout: 60_000 },
  { name: "ResNet-20 'relu-only-preact' (Fig. 4d)", req: { depth: 20, activation: 'relu-only-preact' }, shapes: CIFAR, timeout: 60_000 },
  {
    name: "ImageNet 1-1-1-1 bottleneck 'original'",
    req: { dataset: 'imagenet', stages: [1, 1, 1, 1], activation: 'original', classes: 10 },
    shapes: [[1, 3, 96, 96]],
    timeout: 60_000,
  },
  {
    name: "ImageNet 2-2 basic 'relu-only-preact', exclusive gating",
    req: { dataset: 'imagenet', stages: [2, 2], unit: 'basic', activation: 'relu-only-preact', classes: 10, shortcut: { kind: 'exclusive-gating', gateBias: -1 } },
    shapes: [[1, 3, 96, 96]],
    timeout: 60_000,
  },
  { name: 'ResNet-20 exclusive gating (b_g -2)', req: { depth: 20, shortcut: { kind: 'exclusive-gating', gateBias: -2 } }, shapes: CIFAR, timeout: 60_000 },
  { name: 'ResNet-20 shortcut-only gating (b_g -2)', req: { depth: 20, shortcut: { kind: 'shortcut-gating', gateBias: -2 } }, shapes: CIFAR, timeout: 60_000 },
  { name: 'ResNet-20 constant scaling 0.5 (shortcut and F)', req: { depth: 20, shortcut: { kind: 'scaling', scale: 0.5, scaleResidual: true } }, shapes: CIFAR, timeout: 60_000 },
  { name: 'ResNet-20 constant scaling 0.7 (shortcut only)', req: { depth: 20, shortcut: { kind: 'scaling', scale: 0.7 } }, shapes: CIFAR, timeout: 60_000 },
  { name: 'ResNet-20 1x1 conv shortcuts', req: { depth: 20, shortcut: { kind: 'conv1x1' } }, shapes: CIFAR, timeout: 60_000 },
  { name: 'ResNet-20 dropout shortcut (identity at inference)', req: { depth: 20, shortcut: { kind: 'dropout' } }, shapes: CIFAR, timeout: 60_000 },
];

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resnet-onnx-parity-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (process.env.PARITY_REPORT) console.log(observed.join('\n'));
});

describe('ONNX exports match an independent PyTorch reference', () => {
  for (const c of CASES) {
    it(
      c.name,
      async () => {
        const slug = c.name.replace(/[^A-Za-z0-9]+/g, '_');
        const cfg = resolveConfig(c.req);
        const seed = hashString(c.name);
        const ckpt = join(dir, `${slug}.safetensors`);
        saveWeights(randomizedGraph(cfg, seed), ckpt);
        const cfgPath = join(dir, `${slug}.config.json`);
        writeFileSync(cfgPath, JSON.stringify(cfg));

        // Inputs and the PyTorch reference (started first; it runs while we export).
        const r = rng(seed ^ 0x5eed);
        const inputs = c.shapes.map((shape, k) => {
          const x = fill(shape.reduce((p, d) => p * d, 1), () => r.normal(0, 1));
          const path = join(dir, `${slug}.input${k}.bin`);
          writeFloats(path, x);
          return { shape, x, path, label: `${c.name} @ ${shape.join('x')}` };
        });
        const refs = inputs.map((inp, k) => torchReference(c.name, cfgPath, ckpt, inp.path, inp.shape, join(dir, `${slug}.torch${k}.bin`)));
        refs.forEach((p) => p.catch(() => undefined)); // awaited below; avoid an unhandled rejection meanwhile

        for (const fold of [true, false]) {
          const tag = fold ? 'folded' : 'unfolded';
          const model = join(dir, `${slug}.${tag}.onnx`);
          const report = exportInference(cfg, { output: model, weights: ckpt, fold });
          if (fold) expect(report.foldedBatchNorms, `${c.name}: folding folded nothing`).toBeGreaterThan(0);
          else expect(report.foldedBatchNorms).toBe(0);
          const first = inputs[0];
          const check = onnxCheck(
            `${c.name} (${tag})`,
            model,
            c.opencv !== false ? { input: first.path, shape: first.shape, output: join(dir, `${slug}.${tag}.opencv.bin`) } : undefined,
          );
          check.catch(() => undefined);
          const outs: Float32Array[] = [];
          for (const inp of inputs) outs.push(await runOrt(model, inp.x, inp.shape));
          for (let k = 0; k < inputs.length; k++) {
            const ref = await refs[k];
            expect(ref.length, `${inputs[k].label}: reference gave ${ref.length} logits`).toBe(inputs[k].shape[0] * cfg.classes);
            expectClose(`${inputs[k].label} (${tag})`, outs[k], ref, 'torch', 'onnxruntime');
          }
          const cv = await check;
          if (cv) expectClose(`${first.label} (${tag})`, cv, outs[0], 'onnxruntime', 'OpenCV');
          rmSync(model, { force: true });
        }
        rmSync(ckpt, { force: true });
      },
      c.timeout,
    );
  }
});
