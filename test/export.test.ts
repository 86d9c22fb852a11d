// ONNX export: every depth loads and runs in onnxruntime; files describe themselves; folding is exact;
// checkpoints load, and bad ones are refused with the first tensor that does not fit.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onnx } from '../src/export/proto.js';
import { exportInference } from '../src/export/inference.js';
import { writeOnnx } from '../src/export/onnx.js';
import { saveWeights } from '../src/export/weights.js';
import { type ModelRequest, resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { relDiff, runOnnx, seededInput, tempDir, withTrainedLikeStats } from './helpers.js';

const dir = tempDir();

function checkpoint(req: ModelRequest, name: string, residualScale = 1): string {
  const path = join(dir, `${name}.safetensors`);
  saveWeights(withTrainedLikeStats(buildResNet(resolveConfig(req)), 3, residualScale), path);
  return path;
}

function finite(a: Float32Array): boolean {
  return a.every((v) => Number.isFinite(v));
}

describe('every depth exports, loads in onnxruntime and gives finite logits of the right shape', () => {
  const cifar: [ModelRequest, string][] = [
    [{ depth: 20 }, 'r20'], [{ depth: 32 }, 'r32'], [{ depth: 44 }, 'r44'], [{ depth: 56 }, 'r56'], [{ depth: 110 }, 'r110'],
    [{ depth: 110, unit: 'single' }, 'r110-single'], [{ depth: 164 }, 'r164'], [{ depth: 164, dataset: 'cifar100' }, 'r164-c100'],
    [{ depth: 1001 }, 'r1001'], [{ depth: 1202 }, 'r1202'],
  ];
  for (const [req, name] of cifar) {
    it(`CIFAR ${name}`, async () => {
      // Random-init pre-act nets of 1000+ layers overflow float32 in inference mode (variance doubles per unit
      // with default BN statistics); trained-like statistics and a small last conv keep them finite.
      const deep = (req.depth ?? 0) >= 1000;
      const cfg = resolveConfig(req);
      const out = join(dir, `${name}.onnx`);
      exportInference(cfg, { output: out, weights: deep ? checkpoint(req, name, 0.1) : undefined });
      const r = await runOnnx(out, seededInput(2 * 3 * 32 * 32), [2, 3, 32, 32]);
      expect(r.dims).toEqual([2, cfg.classes]);
      expect(finite(r.data)).toBe(true);
    }, 120_000);
  }
  for (const depth of [18, 34, 50, 101, 152, 200]) {
    it(`ImageNet ResNet-${depth} at 224 and 320`, async () => {
      const out = join(dir, `imagenet${depth}.onnx`);
      exportInference(resolveConfig({ depth }), { output: out });
      for (const size of [224, 320]) {
        const r = await runOnnx(out, seededInput(3 * size * size), [1, 3, size, size]);
        expect(r.dims).toEqual([1, 1000]);
        expect(finite(r.data)).toBe(true);
      }
    }, 180_000);
  }
  it('ImageNet models run at sizes other than 224 and 320 (fully convolutional), down to 32', async () => {
    const out = join(dir, 'imagenet18.onnx');
    for (const [h, w] of [[32, 32], [97, 131]]) {
      const r = await runOnnx(out, seededInput(3 * h * w), [1, 3, h, w]);
      expect(r.dims).toEqual([1, 1000]);
    }
  });
});

describe('folding BatchNorm', () => {
  const cases: [ModelRequest, number][] = [[{ depth: 20 }, 32], [{ depth: 164 }, 32], [{ depth: 50 }, 224], [{ depth: 20, activation: 'original' }, 32]];
  for (const [req, size] of cases) {
    it(`${JSON.stringify(req)}: folded and unfolded agree to 1e-4 relative`, async () => {
      const w = checkpoint(req, `fold-${JSON.stringify(req).replace(/\W/g, '')}`);
      const cfg = resolveConfig(req);
      const a = exportInference(cfg, { output: join(dir, 'folded.onnx'), weights: w });
      const b = exportInference(cfg, { output: join(dir, 'unfolded.onnx'), weights: w, fold: false });
      expect(a.foldedBatchNorms).toBeGreaterThan(0);
      expect(b.foldedBatchNorms).toBe(0);
      const x = seededInput(2 * 3 * size * size, 5);
      const ya = await runOnnx(a.path, x, [2, 3, size, size]);
      const yb = await runOnnx(b.path, x, [2, 3, size, size]);
      expect(relDiff(ya.data, yb.data)).toBeLessThan(1e-4);
    }, 120_000);
  }

  it('folds 2 of the 3 BNs of a full pre-activation bottleneck unit (and the ImageNet stem BN)', () => {
    const r = exportInference(resolveConfig({ depth: 50 }), { output: join(dir, 'r50.onnx') });
    expect(r.foldedBatchNorms).toBe(2 * 16 + 1);
    const basic = exportInference(resolveConfig({ depth: 20 }), { output: join(dir, 'r20.onnx') });
    // One per basic unit, plus stage 1 unit 1's pre-activation BN, whose only input is the stem conv.
    expect(basic.foldedBatchNorms).toBe(9 + 1);
  });
});

describe('self-describing files', () => {
  function load(path: string) {
    return onnx.ModelProto.decode(readFileSync(path));
  }
  it('IR 8 / opset 17 by default, symbolic N/H/W, metadata with labels and preprocessing', () => {
    const out = join(dir, 'meta20.onnx');
    exportInference(resolveConfig({ depth: 20 }), { output: out });
    const m = load(out);
    expect(Number(m.irVersion)).toBe(8);
    expect(m.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', 17]]);
    const input = m.graph!.input![0];
    expect(input.name).toBe('input');
    expect(input.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))).toEqual(['N', 3, 'H', 'W']);
    expect(m.graph!.output!.map((o) => o.name)).toEqual(['logits']);
    const meta = Object.fromEntries(m.metadataProps.map((p) => [p.key, p.value]));
    expect(meta.architecture).toBe('pre-act ResNet-20 (CIFAR-10, 10 classes)');
    expect(JSON.parse(meta.labels!)).toEqual(['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']);
    expect(JSON.parse(meta.preprocessing!)).toMatchObject({ crop: 32, channelOrder: 'RGB', layout: 'NCHW' });
    expect(meta.weights).toMatch(/^random-init/);
    expect(JSON.parse(meta['resnet_onnx.config']!).depth).toBe(20);
    expect(m.docString).toMatch(/Identity Mappings in Deep Residual Networks/);
  });
  it('ImageNet models carry the 1000 ILSVRC-2012 labels and the paper\'s 320/320 test crop', () => {
    const m = load(join(dir, 'imagenet18.onnx'));
    const meta = Object.fromEntries(m.metadataProps.map((p) => [p.key, p.value]));
    const labels = JSON.parse(meta.labels!) as string[];
    expect(labels).toHaveLength(1000);
    expect(labels[0]).toBe('tench');
    expect(JSON.parse(meta.preprocessing!)).toMatchObject({ resize: 320, crop: 320, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  });
  it('optional probabilities output sums to 1', async () => {
    const out = join(dir, 'prob.onnx');
    exportInference(resolveConfig({ depth: 20 }), { output: out, probabilities: true });
    const r = await runOnnx(out, seededInput(3 * 32 * 32), [1, 3, 32, 32], 'probabilities');
    expect(r.data.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
  });
  it('other opsets load in onnxruntime; unsupported ones are refused', async () => {
    for (const opset of [13, 22]) {
      const out = join(dir, `opset${opset}.onnx`);
      exportInference(resolveConfig({ depth: 20, shortcut: { kind: 'dropout' } }), { output: out, opset });
      expect(Number(load(out).opsetImport[0].version)).toBe(opset);
      expect((await runOnnx(out, seededInput(3 * 32 * 32), [1, 3, 32, 32])).dims).toEqual([1, 10]);
    }
    expect(() => exportInference(resolveConfig({ depth: 20 }), { output: join(dir, 'x.onnx'), opset: 12 })).toThrow(/--opset must be an integer from 13 to 22/);
  });
});

describe('checkpoints', () => {
  it('export --weights uses the checkpoint\'s values', async () => {
    const req = { depth: 20 } as const;
    const w = checkpoint(req, 'w20');
    const cfg = resolveConfig(req);
    const a = exportInference(cfg, { output: join(dir, 'wa.onnx'), weights: w, seed: 1 });
    const b = exportInference(cfg, { output: join(dir, 'wb.onnx'), weights: w, seed: 2 });
    const c = exportInference(cfg, { output: join(dir, 'wc.onnx'), seed: 2 });
    expect(a.weights).toBe('checkpoint: w20.safetensors');
    const x = seededInput(3 * 32 * 32);
    const [ya, yb, yc] = await Promise.all([a, b, c].map((r) => runOnnx(r.path, x, [1, 3, 32, 32])));
    expect(relDiff(ya.data, yb.data)).toBe(0);
    expect(relDiff(ya.data, yc.data)).toBeGreaterThan(1e-3);
  });

  it('a checkpoint of another network names the first tensor that does not fit', () => {
    const w110 = checkpoint({ depth: 110 }, 'w110');
    const w20b = checkpoint({ depth: 20, projection: 'B' }, 'w20b');
    const out = join(dir, 'bad.onnx');
    expect(() => exportInference(resolveConfig({ depth: 20 }), { output: out, weights: w110 })).toThrow(/tensor 'stage1\.unit4\.bn1\.weight'|has tensor 'stage1\.unit4/);
    expect(() => exportInference(resolveConfig({ depth: 20, projection: 'B' }), { output: out, weights: checkpoint({ depth: 20 }, 'w20a') })).toThrow(
      /tensor 'stage2\.unit1\.shortcut\.weight' \[32, 16, 1, 1\] is missing/,
    );
    expect(() => exportInference(resolveConfig({ depth: 20, classes: 5 }), { output: out, weights: w20b.replace('w20b', 'w20a') })).toThrow(
      /tensor 'head\.fc\.weight' is \[10, 64\] in the file, \[5, 64\] in the network/,
    );
    expect(() => exportInference(resolveConfig({ depth: 20 }), { output: out, weights: w20b })).toThrow(/it has tensor 'stage2\.unit1\.shortcut\.weight', which the network does not have/);
    expect(existsSync(out)).toBe(false);
  });

  it('corrupt and truncated checkpoints are refused clearly', () => {
    const good = readFileSync(checkpoint({ depth: 20 }, 'c20'));
    const cases: [Uint8Array, RegExp][] = [
      [good.subarray(0, good.length - 100), /ends at byte \d+ of the data, which is only \d+ bytes \(truncated file\?\)/],
      [good.subarray(0, 4), /shorter than the 8-byte header length/],
      [Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), good.subarray(8)]), /declared header length \d+ exceeds the file/],
      [Buffer.concat([good.subarray(0, 8), Buffer.from('{not json'.padEnd(Number(good.readBigUInt64LE(0)))), good.subarray(8 + Number(good.readBigUInt64LE(0)))]), /header is not JSON/],
    ];
    for (const [bytes, message] of cases) {
      const p = join(dir, 'corrupt.safetensors');
      writeFileSync(p, bytes);
      expect(() => exportInference(resolveConfig({ depth: 20 }), { output: join(dir, 'c.onnx'), weights: p })).toThrow(message);
    }
    expect(() => exportInference(resolveConfig({ depth: 20 }), { output: join(dir, 'c.onnx'), weights: join(dir, 'nope.safetensors') })).toThrow(/cannot open checkpoint .*nope\.safetensors/);
  });
});

describe('writing', () => {
  it('an unwritable output path says so and leaves nothing behind', () => {
    const g = buildResNet(resolveConfig({ depth: 20 }));
    expect(() => writeOnnx(g, join(dir, 'no-such-dir', 'x.onnx'))).toThrow(/cannot write .*no-such-dir\/x\.onnx: ENOENT/);
    expect(readdirSync(dir).some((f) => f.endsWith('.tmp'))).toBe(false);
  });
});
