// Importing timm's pre-activation ResNetV2 from safetensors, end to end: the reference
// (test/reference/timm_resnetv2_torch.py) has timm's module names, so its state dict has the real key layout
// (num_batches_tracked included); we import the file it writes, export ONNX, and compare onnxruntime's logits
// at 224 and 320. Then: metadata (mean = std = 0.5), the CLI, errors naming the key, fuzzing.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError, SafeTensorsFile, writeSafeTensors } from '../src/export/safetensors.js';
import { ImportError, detectFormat, exportImported, importModel } from '../src/import/index.js';
import { rng } from '../src/graph/init.js';
import { ConfigError } from '../src/models/config.js';
import { expectMatchesReference, fuzzBytes, metadataOf, python, relDiff, runCli, runOnnx, seededInput, tempDir } from './helpers.js';

const TIMM_REF = fileURLToPath(new URL('./reference/timm_resnetv2_torch.py', import.meta.url));
const REL_TOL = 1e-4;

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
  return 'no error';
}

const SHAPES = [
  [2, 3, 224, 224],
  [1, 3, 320, 320],
];

const CASES = [
  { name: 'resnetv2 bottleneck 2-1-1-1 (resnetv2_50 structure)', unit: 'bottleneck', stages: [2, 1, 1, 1] },
  { name: 'resnetv2 basic 1-1-2-1 (resnetv2_18 structure)', unit: 'basic', stages: [1, 1, 2, 1] },
] as const;

let dir: string;
const inputs: { x: Float32Array; shape: number[]; path: string }[] = [];
const files = new Map<string, { path: string; refs: string[] }>();

beforeAll(async () => {
  dir = tempDir('resnet-onnx-import-timm-');
  SHAPES.forEach((shape, k) => {
    const x = seededInput(shape.reduce((p, d) => p * d, 1), 200 + k);
    const path = join(dir, `x${k}.bin`);
    writeFileSync(path, x);
    inputs.push({ x, shape, path });
  });
  for (const [i, c] of CASES.entries()) {
    const path = join(dir, `resnetv2_${c.unit}.safetensors`);
    const refs = SHAPES.map((_, k) => join(dir, `${c.unit}.ref${k}.bin`));
    const runs = inputs.flatMap((inp, k) => ['--run', inp.path, inp.shape.join(','), refs[k]]);
    await python([TIMM_REF, '--unit', c.unit, '--stages', c.stages.join(','), '--seed', String(20 + i), '--safetensors', path, ...runs]);
    files.set(c.unit, { path, refs });
  }
}, 180_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('timm ResNetV2 safetensors -> ONNX matches the PyTorch ResNetV2', () => {
  for (const c of CASES) {
    it(`${c.name}: logits equal to 1e-4 at 224 and 320, folded and unfolded`, async () => {
      const { path, refs } = files.get(c.unit)!;
      const keys = [...SafeTensorsFile.open(path).tensors.keys()];
      expect(keys.filter((k) => k.endsWith('num_batches_tracked')).length).toBeGreaterThan(5);
      expect(keys).toContain('stages.1.blocks.0.downsample.conv.weight');
      expect(detectFormat(path)).toBe('timm-safetensors');
      const net = importModel(path);
      expect(net.cfg.layout).toEqual({ origin: 'timm', stemNorm: false, firstPreact: 'split-if-projecting', projectionNorm: false, convBias: false });
      expect([net.cfg.unit, net.cfg.stages.map((s) => s.units)]).toEqual([c.unit, c.stages]);
      // timm's crop_pct: 0.95 for resnetv2_50/101 (a1h), 0.9 for resnetv2_18/34 (ra4).
      expect([net.preprocessing.resize, net.preprocessing.crop]).toEqual(c.unit === 'bottleneck' ? [235, 224] : [248, 224]);
      for (const fold of [true, false]) {
        const out = join(dir, `${c.unit}.${fold}.onnx`);
        exportImported(net, { output: out, fold });
        await expectMatchesReference(out, inputs, refs, `${c.name} (fold ${fold})`, REL_TOL);
        rmSync(out);
      }
      net.close();
    }, 120_000);
  }

  it('the ONNX records source, mean = std = 0.5, ImageNet labels and "imported: ..." weights', () => {
    const net = importModel(files.get('bottleneck')!.path);
    const out = join(dir, 'meta.onnx');
    exportImported(net, { output: out });
    net.close();
    const md = metadataOf(out);
    expect(md.weights).toBe('imported: resnetv2_bottleneck.safetensors (timm ResNetV2, safetensors)');
    expect(md.source).toMatch(/^timm resnetv2\.py ResNetV2 state dict, safetensors file resnetv2_bottleneck\.safetensors \(sha256 [0-9a-f]{64}\)$/);
    expect(JSON.parse(md.preprocessing)).toEqual({ resize: 235, crop: 224, scale: 1 / 255, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], channelOrder: 'RGB', layout: 'NCHW', interpolation: 'bicubic' });
    expect((JSON.parse(md.labels) as string[]).slice(0, 2)).toEqual(['tench', 'goldfish']);
    expect(md.architecture).toBe('pre-act ResNet-17 (ImageNet, 1000 classes, timm layout)');
    rmSync(out);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Errors name the key

/** Rewrites the bottleneck file through `edit` (name -> tensor) as a new safetensors file. */
function variant(name: string, edit: (t: Map<string, { shape: number[]; values: Float32Array }>) => void): string {
  const src = SafeTensorsFile.open(files.get('bottleneck')!.path);
  const t = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [k, e] of src.tensors) if (e.dtype !== 'I64') t.set(k, { shape: [...e.shape], values: src.readFloat32(k) });
  src.close();
  edit(t);
  const path = join(dir, `${name}.safetensors`);
  writeSafeTensors(path, [...t].map(([k, v]) => ({ name: k, shape: v.shape, values: () => v.values })), { format: 'pt' });
  return path;
}

describe('what does not fit is an error naming the key', () => {
  it('a missing key, a wrong shape, an unknown key', () => {
    let p = variant('missing', (t) => t.delete('stages.1.blocks.0.conv2.weight'));
    expect(errorOf(() => importModel(p))).toBe("ImportError: missing.safetensors: key 'stages.1.blocks.0.conv2.weight' is missing (needed for 'stage2.unit1.conv2.weight')");
    p = variant('shape', (t) => t.set('stages.0.blocks.1.conv2.weight', { shape: [64, 64, 1, 1], values: new Float32Array(64 * 64) }));
    expect(errorOf(() => exportImported(importModel(p), { output: join(dir, 'x.onnx') }))).toBe(
      "ImportError: shape.safetensors: key 'stages.0.blocks.1.conv2.weight' is [64, 64, 1, 1], but 'stage1.unit2.conv2.weight' of the network is [64, 64, 3, 3]",
    );
    p = variant('extra', (t) => t.set('stages.0.blocks.0.se.fc1.weight', { shape: [4], values: new Float32Array(4) }));
    expect(errorOf(() => importModel(p))).toBe("ImportError: extra.safetensors: key 'stages.0.blocks.0.se.fc1.weight' is not part of a timm ResNetV2 (resnetv2_50/101/152, BatchNorm)");
  });

  it('BiT (GroupNorm), a deep stem and a missing classifier are named', () => {
    let p = variant('bit', (t) => {
      for (const k of [...t.keys()]) if (/running_(mean|var)$/.test(k)) t.delete(k);
    });
    expect(errorOf(() => importModel(p))).toMatch(/^ImportError: bit\.safetensors: key '.*norm\d?\.weight' has no running_mean: GroupNorm \(BiT, resnetv2_\*x\*_bit\) checkpoints are not supported/);
    p = variant('deep', (t) => {
      t.set('stem.conv1.weight', t.get('stem.conv.weight')!);
      t.delete('stem.conv.weight');
    });
    expect(errorOf(() => importModel(p))).toMatch(/key 'stem\.conv1\.weight': a deep stem \(resnetv2_\*d \/ \*t\) is not supported/);
    p = variant('headless', (t) => {
      t.delete('head.fc.weight');
      t.delete('head.fc.bias');
    });
    expect(errorOf(() => importModel(p))).toMatch(/key 'head\.fc\.weight' is missing: a model without its classifier/);
  });

  it('files that are neither format say what they are', () => {
    const zip = join(dir, 'model.pth');
    writeFileSync(zip, Buffer.from('PK\x03\x04rest of a zip archive'));
    expect(errorOf(() => importModel(zip))).toMatch(/^ImportError: model\.pth: a zip archive \(PyTorch's torch\.save format\?\)/);
    const pickle = join(dir, 'model.pkl');
    writeFileSync(pickle, Buffer.from([0x80, 0x04, 0x95, 0, 0, 0, 0, 0, 0, 0]));
    expect(errorOf(() => importModel(pickle))).toMatch(/^ImportError: model\.pkl: a Python pickle; pickles run code/);
    const other = join(dir, 'other.safetensors');
    writeSafeTensors(other, [{ name: 'encoder.weight', shape: [2], values: () => new Float32Array(2) }]);
    expect(errorOf(() => importModel(other))).toMatch(/^ImportError: other\.safetensors: a safetensors file, but neither a timm ResNetV2 state dict .* nor a resnet-onnx checkpoint \(it holds 1 tensor: 'encoder\.weight'\)$/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// A 1-channel stem: timm.create_model('resnetv2_50', in_chans=1) sums the RGB filters of the stem (its
// adapt_input_conv), so the grey model on g must equal the RGB model on (g, g, g).

describe('a timm state dict with a 1-channel stem (in_chans=1)', () => {
  it('imports with grey (L) preprocessing, and its --save-weights checkpoint rebuilds the same model', async () => {
    const grey = variant('grey', (t) => {
      const w = t.get('stem.conv.weight')!;
      const [out, , kh, kw] = w.shape;
      const k = kh * kw;
      const summed = new Float32Array(out * k);
      for (let o = 0; o < out; o++) for (let c = 0; c < 3; c++) for (let i = 0; i < k; i++) summed[o * k + i] += w.values[(o * 3 + c) * k + i];
      t.set('stem.conv.weight', { shape: [out, 1, kh, kw], values: summed });
    });
    const a = join(dir, 'grey-import.onnx');
    const ckpt = join(dir, 'grey-checkpoint.safetensors');
    const r = await runCli('import', grey, '-o', a, '--save-weights', ckpt, '-q');
    expect([r.code, r.err]).toEqual([0, '']);
    expect(r.out).toMatch(/note: the stem reads 1 channel: the model takes grey \(L\) input, mean 0\.5, std 0\.5/);
    const want = { resize: 235, crop: 224, scale: 1 / 255, mean: [0.5], std: [0.5], channelOrder: 'L', layout: 'NCHW', interpolation: 'bicubic' };
    expect(JSON.parse(metadataOf(a).preprocessing)).toEqual(want);
    expect(JSON.parse(SafeTensorsFile.open(ckpt).metadata.preprocessing)).toEqual(want);

    // The checkpoint states what the network takes, so export --weights accepts it (it refused it before).
    const b = join(dir, 'grey-export.onnx');
    const e = await runCli('export', '--weights', ckpt, '-o', b, '-q');
    expect([e.code, e.err]).toEqual([0, '']);
    expect(JSON.parse(metadataOf(b).preprocessing)).toEqual(want);

    const rgb = join(dir, 'grey-rgb-reference.onnx');
    const net = importModel(files.get('bottleneck')!.path);
    exportImported(net, { output: rgb });
    net.close();
    const g = seededInput(224 * 224, 300);
    const ggg = new Float32Array(3 * 224 * 224);
    for (let c = 0; c < 3; c++) ggg.set(g, c * 224 * 224);
    const ref = (await runOnnx(rgb, ggg, [1, 3, 224, 224])).data;
    for (const model of [a, b]) expect(relDiff((await runOnnx(model, g, [1, 1, 224, 224])).data, ref), model).toBeLessThan(1e-4);
  }, 60_000);

  it('a stem of another channel count is refused, naming it', () => {
    const p = variant('four', (t) => {
      const w = t.get('stem.conv.weight')!;
      t.set('stem.conv.weight', { shape: [w.shape[0], 4, w.shape[2], w.shape[3]], values: new Float32Array(w.shape[0] * 4 * w.shape[2] * w.shape[3]) });
    });
    expect(errorOf(() => importModel(p))).toBe(
      'ImportError: four.safetensors: the stem convolution reads 4 channels; a model\'s preprocessing states grey (L, 1 channel) or RGB (3 channels) input, so only those stems are imported',
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// Fuzzing: truncations and byte flips (header and data) end in a clean error or a model

describe('fuzzing the safetensors importer', () => {
  it('truncations and byte flips of a real state dict never crash or hang', () => {
    const bytes = readFileSync(files.get('basic')!.path);
    const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
    const path = join(dir, 'fuzz.safetensors');
    const rnd = rng(99, 'fuzz');
    const outcome = (b: Uint8Array): 'ok' | 'error' => {
      writeFileSync(path, b);
      try {
        const net = importModel(path);
        try {
          exportImported(net, { output: join(dir, 'fuzz.onnx') });
        } finally {
          net.close();
        }
        return 'ok';
      } catch (e) {
        if (e instanceof ImportError || e instanceof CheckpointError || e instanceof ConfigError) return 'error';
        throw new Error(`not a clean error: ${(e as Error).stack}`);
      }
    };
    // Mostly in the JSON header (structure), some in the data.
    const pickAt = (): number => (rnd() < 0.85 ? Math.floor(rnd() * headerEnd) : headerEnd + Math.floor(rnd() * (bytes.length - headerEnd)));
    fuzzBytes(bytes, rnd, pickAt, outcome, 60, 15);
  }, 300_000);
});

// ---------------------------------------------------------------------------------------------------------
// The CLI

describe('resnet-onnx import / export --weights with timm safetensors', () => {
  it('import and export --weights write the same model; architecture flags conflict', async () => {
    const { path } = files.get('bottleneck')!;
    const a = join(dir, 'cli-a.onnx');
    const r = await runCli('import', path, '-o', a, '-q', '--probabilities');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^pre-act ResNet-17 \(ImageNet, 1000 classes, timm layout\)\nsource: timm resnetv2\.py/);
    expect(r.out).toMatch(/note: 16 num_batches_tracked tensors ignored/);
    const b = join(dir, 'cli-b.onnx');
    expect((await runCli('export', '--weights', path, '-o', b, '-q', '--probabilities')).code).toBe(0);
    const inp = inputs[0];
    const pa = (await runOnnx(a, inp.x, inp.shape, 'probabilities')).data;
    expect(relDiff((await runOnnx(b, inp.x, inp.shape, 'probabilities')).data, pa)).toBe(0);
    expect(Math.abs(pa.slice(0, 1000).reduce((s, v) => s + v, 0) - 1)).toBeLessThan(1e-5);
    const c = await runCli('export', '--depth', '50', '--weights', path, '-o', join(dir, 'c.onnx'));
    expect(c.code).toBe(2);
    expect(c.err).toMatch(/--depth conflicts with --weights .*: the architecture of a timm state dict comes from the file/);
  }, 60_000);
});
