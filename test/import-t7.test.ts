// Importing fb.resnet.torch's pre-activation ResNets from Lua Torch .t7 files, end to end: the reference
// (test/reference/fb_preresnet_torch.py) writes a real .t7 with the nn/cudnn module tree of preresnet.lua and
// runs the same tree in PyTorch; we import it, export ONNX, and compare onnxruntime's logits at 224 and 320.
// Then: metadata, the CLI, errors that name the module path, and fuzzing of the importer on a real model file.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImportError, T7Error, exportImported, importModel, importedGraph } from '../src/import/index.js';
import { mapFbResNet } from '../src/import/fbresnet.js';
import { T7Object, T7Storage, T7Table, T7Tensor, type T7Value, readT7 } from '../src/import/t7.js';
import { LuaObject, LuaStorage, LuaTable, LuaTensor, type LuaValue, t7 as writeT7 } from './t7-writer.js';
import { rng } from '../src/graph/init.js';
import { ConfigError } from '../src/models/config.js';
import { expectMatchesReference, fuzzBytes, metadataOf, python, relDiff, runCli, runOnnx, seededInput, T7_FIXTURES, tempDir } from './helpers.js';

const FB_REF = fileURLToPath(new URL('./reference/fb_preresnet_torch.py', import.meta.url));
const FIXTURES = T7_FIXTURES;
const REL_TOL = 1e-4;

const SHAPES = [
  [2, 3, 224, 224],
  [1, 3, 320, 320],
];

interface Case {
  name: string;
  variant: 'released' | 'current';
  unit: 'basic' | 'bottleneck';
  stages: number[];
  layout: Record<string, unknown>;
}

const CASES: Case[] = [
  {
    name: "released ResNet-200's layout (bottleneck 2-1-1-1)",
    variant: 'released',
    unit: 'bottleneck',
    stages: [2, 1, 1, 1],
    layout: { origin: 'fb.resnet.torch', stemNorm: true, firstPreact: 'branch', projectionNorm: true, convBias: true },
  },
  {
    name: "today's preresnet.lua (basic 1-2-1-1)",
    variant: 'current',
    unit: 'basic',
    stages: [1, 2, 1, 1],
    layout: { origin: 'fb.resnet.torch', stemNorm: true, firstPreact: 'split', projectionNorm: false, convBias: false },
  },
];

let dir: string;
const inputs: { x: Float32Array; shape: number[]; path: string }[] = [];
const files = new Map<string, { t7: string; refs: string[] }>();

beforeAll(async () => {
  dir = tempDir('resnet-onnx-import-t7-');
  SHAPES.forEach((shape, k) => {
    const x = seededInput(shape.reduce((p, d) => p * d, 1), 100 + k);
    const path = join(dir, `x${k}.bin`);
    writeFileSync(path, x);
    inputs.push({ x, shape, path });
  });
  for (const [i, c] of CASES.entries()) {
    const t7 = join(dir, `${c.variant}.t7`);
    const refs = SHAPES.map((_, k) => join(dir, `${c.variant}.ref${k}.bin`));
    const runs = inputs.flatMap((inp, k) => ['--run', inp.path, inp.shape.join(','), refs[k]]);
    await python([FB_REF, '--variant', c.variant, '--unit', c.unit, '--stages', c.stages.join(','), '--seed', String(10 + i), '--t7', t7, ...runs]);
    files.set(c.variant, { t7, refs });
  }
}, 180_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('fb.resnet.torch .t7 -> ONNX matches the module tree run in PyTorch', () => {
  for (const c of CASES) {
    it(`${c.name}: logits equal to 1e-4 at 224 and 320, folded and unfolded`, async () => {
      const { t7, refs } = files.get(c.variant)!;
      const net = importModel(t7);
      expect(net.format).toBe('t7');
      expect(net.cfg.layout).toEqual(c.layout);
      expect(net.cfg.unit).toBe(c.unit);
      expect(net.cfg.stages.map((s) => s.units)).toEqual(c.stages);
      for (const fold of [true, false]) {
        const out = join(dir, `${c.variant}.${fold}.onnx`);
        const report = exportImported(net, { output: out, fold });
        expect(report.foldedBatchNorms > 0).toBe(fold);
        await expectMatchesReference(out, inputs, refs, `${c.name} (fold ${fold})`, REL_TOL);
        rmSync(out);
      }
      net.close();
    }, 120_000);
  }

  it('the ONNX records source, preprocessing, ImageNet labels and "imported: ..." weights', () => {
    const net = importModel(files.get('released')!.t7);
    const out = join(dir, 'meta.onnx');
    exportImported(net, { output: out });
    const md = metadataOf(out);
    expect(md.weights).toBe('imported: released.t7 (fb.resnet.torch pre-activation ResNet, Lua Torch .t7)');
    expect(md.source).toMatch(/^fb\.resnet\.torch models\/preresnet\.lua module tree, Lua Torch \.t7 file released\.t7 \(sha256 [0-9a-f]{64}\)$/);
    expect(JSON.parse(md.preprocessing)).toEqual({ resize: 320, crop: 320, scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], channelOrder: 'RGB', layout: 'NCHW', interpolation: 'bilinear' });
    const labels = JSON.parse(md.labels) as string[];
    expect([labels.length, labels[0], labels[1]]).toEqual([1000, 'tench', 'goldfish']);
    expect(md.architecture).toBe('pre-act ResNet-17 (ImageNet, 1000 classes, fb.resnet.torch layout)');
    expect(JSON.parse(md['resnet_onnx.config']).layout.firstPreact).toBe('branch');
    rmSync(out);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Anything that does not fit is a clear error naming the module path

function loadTree(variant: string): T7Object {
  return readT7(readFileSync(files.get(variant)!.t7)) as T7Object;
}

function child(o: T7Object, ...path: number[]): T7Object {
  let m = o;
  for (const i of path) m = (m.get('modules') as unknown as { get(k: number): T7Value }).get(i) as T7Object;
  return m;
}

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
  return 'no error';
}

describe('what does not fit is an error naming the module path', () => {
  it('an unknown module class', () => {
    const root = loadTree('released');
    (child(root, 6, 1) as { className: string }).className = 'nn.SpatialDropout';
    expect(errorOf(() => mapFbResNet(root))).toBe(
      'ImportError: model.modules[6].modules[1] is an nn.SpatialDropout, which fb.resnet.torch\'s pre-activation ResNets do not use (known: nn/cudnn Sequential, ConcatTable, CAddTable, Identity, SpatialConvolution, SpatialBatchNormalization, ReLU, SpatialMaxPooling, SpatialAveragePooling, Copy, View, Reshape, Linear)',
    );
  });

  it('a missing tensor', () => {
    const root = loadTree('released');
    const conv = child(root, 5, 2, 1, 1, 3); // stage 1 unit 2: ConcatTable > branch > first conv
    conv.fields.entries.delete('weight');
    expect(errorOf(() => mapFbResNet(root))).toMatch(/^ImportError: model\.modules\[5\]\.modules\[2\]\.modules\[1\]\.modules\[1\]\.modules\[3\] \(cudnn\.SpatialConvolution\): has no 'weight' tensor$/);
  });

  it('a shape mismatch', () => {
    const root = loadTree('released');
    const bn = child(root, 6, 1, 1, 1, 4); // stage 2 unit 1: the BN between conv1 and conv2
    bn.fields.entries.set('running_mean', new T7Tensor('torch.FloatTensor', 'float32', [3], [1], 0));
    expect(errorOf(() => mapFbResNet(root))).toMatch(
      /^ImportError: model\.modules\[6\]\.modules\[1\]\.modules\[1\]\.modules\[1\]\.modules\[4\] \(.*SpatialBatchNormalization\): running_mean has 3 values, but 128 channels arrive there$/,
    );
    const root2 = loadTree('released');
    child(root2, 14).fields.entries.set('weight', new T7Tensor('torch.FloatTensor', 'float32', [1000, 7], [7, 1], 0));
    expect(errorOf(() => mapFbResNet(root2))).toBe('ImportError: model.modules[14] (nn.Linear): weight [1000, 7] should be [classes, 2048]');
  });

  it('a conv whose hyper-parameters are not preresnet.lua\'s', () => {
    const root = loadTree('current');
    // Stage 3 unit 1 pre-activates before its ConcatTable (modules[3]); its branch's second 3x3 conv is modules[4].
    const conv = child(root, 7, 1, 3, 1, 4);
    conv.fields.entries.set('dW', 2);
    conv.fields.entries.set('dH', 2);
    expect(errorOf(() => mapFbResNet(root))).toMatch(/^ImportError: model\.modules\[7\]\.modules\[1\]\.modules\[3\]\.modules\[1\]\.modules\[4\] \(.*SpatialConvolution\): the second 3x3 convolution should be 3x3, stride 1, padding 1; it is 3x3, stride 2, padding 1$/);
  });

  it('a truncated file, a Windows file, a gModule and a function', async () => {
    const t7 = files.get('current')!.t7;
    const cut = join(dir, 'cut.t7');
    writeFileSync(cut, readFileSync(t7).subarray(0, 5_000_000));
    expect(errorOf(() => importModel(cut))).toMatch(/^T7Error: cut\.t7: torch\.FloatStorage declares \d+ elements \(\d+ bytes\), but only \d+ bytes are left \(truncated file\?\)/);
    const win = join(dir, 'win.t7');
    await python([FB_REF, '--variant', 'released', '--unit', 'basic', '--stages', '1,1,1,1', '--classes', '10', '--t7', win, '--long-size', '4']);
    expect(errorOf(() => importModel(win))).toMatch(/^T7Error: win\.t7: written by Lua Torch on Windows, whose C 'long' is 4 bytes/);
    expect(errorOf(() => importModel(join(FIXTURES, 'gmodule_with_linear_identity.t7')))).toMatch(/^ImportError: gmodule_with_linear_identity\.t7: model is an nngraph gModule/);
    expect(errorOf(() => importModel(join(FIXTURES, 'function.t7')))).toMatch(/^T7Error: function\.t7: a serialised Lua function/);
    expect(errorOf(() => importModel(join(FIXTURES, 'hello=123.t7')))).toBe('ImportError: hello=123.t7: model should be an nn module, found a table with 1 entry');
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------------------
// A 1-channel stem: the model takes grey (L) input with one mean and std, and its checkpoint re-exports

/** A value read from a .t7 file as the test writer's value, so that an edited tree can be written back. */
function toLua(v: T7Value, memo = new Map<object, LuaValue>()): LuaValue {
  if (v === null || typeof v !== 'object') return v;
  const seen = memo.get(v);
  if (seen !== undefined) return seen;
  const typeOf = (className: string): string => /^torch\.(\w*?)(Tensor|Storage)$/.exec(className)![1];
  if (v instanceof T7Storage) {
    const values = v.elementType === 'float32' ? Array.from(new Float32Array(Uint8Array.from(v.bytes).buffer)) : Array.from({ length: v.length }, (_, i) => v.at(i));
    const out = new LuaStorage(typeOf(v.className), values);
    memo.set(v, out);
    return out;
  }
  if (v instanceof T7Tensor) {
    const out = new LuaTensor(typeOf(v.className), v.storage ? (toLua(v.storage, memo) as LuaStorage) : null, v.sizes, v.strides, v.offset);
    memo.set(v, out);
    return out;
  }
  const table = new LuaTable();
  const out = v instanceof T7Object ? new LuaObject(v.className, table, v.version) : table;
  memo.set(v, out);
  for (const [k, x] of (v instanceof T7Object ? v.fields : (v as T7Table)).entries) table.set(toLua(k as T7Value, memo), toLua(x, memo));
  return out;
}

describe('a .t7 model with a 1-channel stem', () => {
  it('imports with grey (L) preprocessing (mean and std: luma-weighted), and its checkpoint re-exports the same model', async () => {
    // The released layout with its stem's RGB filters summed: on (g, g, g) the RGB net equals the grey net on g.
    const root = loadTree('released');
    const stem = child(root, 1);
    const w = stem.get('weight') as T7Tensor;
    const [out, , kh, kw] = w.sizes;
    const rgb = w.toFloat32();
    const k = kh * kw;
    const summed = new Float32Array(out * k);
    for (let o = 0; o < out; o++) for (let c = 0; c < 3; c++) for (let i = 0; i < k; i++) summed[o * k + i] += rgb[(o * 3 + c) * k + i];
    const t = new T7Tensor('torch.FloatTensor', 'float32', [out, 1, kh, kw], [k, k, kw, 1], 0);
    t.storage = new T7Storage('torch.FloatStorage', 'float32', summed.length, new Uint8Array(summed.buffer), 4);
    stem.fields.entries.set('weight', t);
    stem.fields.entries.set('nInputPlane', 1);
    const grey = join(dir, 'grey.t7');
    writeFileSync(grey, writeT7(toLua(root)));

    const a = join(dir, 'grey-import.onnx');
    const ckpt = join(dir, 'grey-t7.safetensors');
    const r = await runCli('import', grey, '-o', a, '--save-weights', ckpt, '-q');
    expect([r.code, r.err]).toEqual([0, '']);
    expect(r.out).toMatch(/note: the stem reads 1 channel: the model takes grey \(L\) input, mean 0\.459, std 0\.226/);
    expect(r.out).toMatch(/note: fb\.resnet\.torch's mean and std are per RGB channel; the grey input's are their luma-weighted \(0\.299, 0\.587, 0\.114\) averages/);
    const want = { resize: 320, crop: 320, scale: 1 / 255, mean: [0.459], std: [0.226], channelOrder: 'L', layout: 'NCHW', interpolation: 'bilinear' };
    expect(JSON.parse(metadataOf(a).preprocessing)).toEqual(want);
    const b = join(dir, 'grey-export.onnx');
    const e = await runCli('export', '--weights', ckpt, '-o', b, '-q');
    expect([e.code, e.err]).toEqual([0, '']);
    expect(JSON.parse(metadataOf(b).preprocessing)).toEqual(want);

    const reference = join(dir, 'grey-rgb-reference.onnx');
    const net = importModel(files.get('released')!.t7);
    exportImported(net, { output: reference });
    const g = seededInput(224 * 224, 400);
    const ggg = new Float32Array(3 * 224 * 224);
    for (let c = 0; c < 3; c++) ggg.set(g, c * 224 * 224);
    const ref = (await runOnnx(reference, ggg, [1, 3, 224, 224])).data;
    for (const model of [a, b]) expect(relDiff((await runOnnx(model, g, [1, 1, 224, 224])).data, ref), model).toBeLessThan(1e-4);
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------------------
// Fuzzing the importer on a real model file: flips in the file's structure (not in weight data, where a flip
// only changes a value) and truncations end in a clean error or a model, never a crash or a hang.

const CLEAN = [T7Error, ImportError, ConfigError];

function importBytes(bytes: Uint8Array): 'ok' | 'error' {
  try {
    const net = { ...mapFbResNet(readT7(bytes)) };
    const g = importedGraph({ ...net, weights: '', source: '', preprocessing: {} as never });
    for (const init of g.initializers) init.data.values();
    return 'ok';
  } catch (e) {
    if (CLEAN.some((c) => e instanceof c)) return 'error';
    throw new Error(`not a clean error: ${(e as Error).stack}`);
  }
}

describe('fuzzing the .t7 importer', () => {
  it('structural byte flips and truncations of a real model file never crash or hang', () => {
    const bytes = readFileSync(files.get('current')!.t7);
    // Byte ranges holding storage data, from a clean parse; everything else is structure.
    const data: [number, number][] = [];
    const seen = new Set<unknown>();
    const stack: T7Value[] = [readT7(bytes)];
    while (stack.length) {
      const v = stack.pop()!;
      if (v === null || typeof v !== 'object' || seen.has(v)) continue;
      seen.add(v);
      if (v instanceof T7Storage) data.push([v.bytes.byteOffset - bytes.byteOffset, v.bytes.byteOffset - bytes.byteOffset + v.bytes.length]);
      else if (v instanceof T7Tensor) stack.push(v.storage);
      else for (const [k, x] of (v instanceof T7Object ? v.fields : v).entries) stack.push(k as T7Value, x);
    }
    data.sort((a, b) => a[0] - b[0]);
    const structure: number[] = [];
    let pos = 0;
    for (const [a, b] of data) {
      for (let i = pos; i < a; i++) structure.push(i);
      pos = Math.max(pos, b);
    }
    for (let i = pos; i < bytes.length; i++) structure.push(i);
    expect(structure.length).toBeGreaterThan(10_000);

    const rnd = rng(777, 'fuzz');
    fuzzBytes(bytes, rnd, () => structure[Math.floor(rnd() * structure.length)], importBytes, 100, 20);
  }, 300_000);
});

// ---------------------------------------------------------------------------------------------------------
// The CLI

describe('resnet-onnx import / export --weights with a .t7', () => {
  it('import writes the model; its checkpoint re-exports the same model without architecture flags', async () => {
    const { t7 } = files.get('released')!;
    const a = join(dir, 'cli-a.onnx');
    const ckpt = join(dir, 'cli.safetensors');
    const r = await runCli('import', t7, '-o', a, '--save-weights', ckpt, '-q');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^pre-act ResNet-17 \(ImageNet, 1000 classes, fb\.resnet\.torch layout\)\nsource: fb\.resnet\.torch models\/preresnet\.lua module tree/);
    expect(r.out).toMatch(/note: model\.modules\[12\] \(cudnn\.SpatialAveragePooling\) \(7x7, stride 1\) is replaced by global average pooling/);
    expect(r.out).toMatch(/weights imported: released\.t7/);

    const b = join(dir, 'cli-b.onnx');
    const r2 = await runCli('export', '--weights', ckpt, '-o', b, '-q');
    expect(r2.code).toBe(0);
    const c = join(dir, 'cli-c.onnx');
    expect((await runCli('export', '--weights', t7, '-o', c, '-q')).code).toBe(0);
    const ma = metadataOf(a);
    for (const other of [b, c]) {
      const mb = metadataOf(other);
      for (const key of ['weights', 'preprocessing', 'labels', 'resnet_onnx.config', 'source', 'architecture']) expect(mb[key], `${other}: ${key}`).toBe(ma[key]);
    }
    const inp = inputs[1];
    const ya = (await runOnnx(a, inp.x, inp.shape)).data;
    expect(relDiff((await runOnnx(b, inp.x, inp.shape)).data, ya)).toBe(0);
    expect(relDiff((await runOnnx(c, inp.x, inp.shape)).data, ya)).toBe(0);
  }, 120_000);

  it('architecture flags conflict with a .t7; unreadable files exit 2 with the reason', async () => {
    const { t7 } = files.get('current')!;
    let r = await runCli('export', '--depth', '50', '--weights', t7, '-o', join(dir, 'x.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--depth conflicts with --weights .*current\.t7: the architecture of a \.t7 model comes from the file/);
    r = await runCli('import', join(FIXTURES, 'function_upvals.t7'), '-o', join(dir, 'f.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^error: cannot import \S*function_upvals\.t7: a serialised Lua function/);
    r = await runCli('import', join(dir, 'missing.t7'), '-o', join(dir, 'm.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/missing\.t7\b.*no such file/);
  });

  it('export --weights takes a checkpoint\'s recorded architecture when no flags are given', async () => {
    const ckpt = join(dir, 'r20.safetensors');
    expect((await runCli('export', '--depth', '20', '--dataset', 'cifar100', '-o', join(dir, 'r20a.onnx'), '--save-weights', ckpt, '-q')).code).toBe(0);
    const r = await runCli('export', '--weights', ckpt, '-o', join(dir, 'r20b.onnx'), '-q');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^pre-act ResNet-20 \(CIFAR-100, 100 classes\)/);
    expect(r.out).toMatch(/weights random-init \(seed 0\)/);
    const x = seededInput(2 * 3 * 32 * 32, 5);
    const ya = (await runOnnx(join(dir, 'r20a.onnx'), x, [2, 3, 32, 32])).data;
    expect(relDiff((await runOnnx(join(dir, 'r20b.onnx'), x, [2, 3, 32, 32])).data, ya)).toBe(0);
  }, 60_000);
});
