// The CLI: commands do what they print, and bad arguments get a clear message and a non-zero exit.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeMeanImage } from '../src/export/metadata.js';
import { saveWeights } from '../src/export/weights.js';
import { timmPreprocessing } from '../src/import/index.js';
import { ACTIVATIONS, resolveConfig } from '../src/models/config.js';
import { type Preprocessing, datasetPreprocessing } from '../src/models/labels.js';
import { buildResNet, graphName } from '../src/models/preact.js';
import { onnx } from '../src/export/proto.js';
import { defaultOutput } from '../src/cli/output-paths.js';
import { metadataOf, runCli, tempDir } from './helpers.js';

const dir = tempDir();

afterEach(() => vi.restoreAllMocks());

describe('resnet-onnx export', () => {
  it('writes the model and says what it wrote', async () => {
    const out = join(dir, 'r20.onnx');
    const r = await runCli('export', '--depth', '20', '-o', out, '--quiet');
    expect(r.code).toBe(0);
    expect(existsSync(out)).toBe(true);
    expect(r.out).toMatch(/pre-act ResNet-20 \(CIFAR-10, 10 classes\)/);
    expect(r.out).toMatch(/269,722 parameters/);
  });

  it('writes a checkpoint that --weights reads back', async () => {
    const w = join(dir, 'r20.safetensors');
    expect((await runCli('export', '--depth', '20', '-o', join(dir, 'a.onnx'), '--save-weights', w, '-q')).code).toBe(0);
    const r = await runCli('export', '--depth', '20', '-o', join(dir, 'b.onnx'), '--weights', w, '-q');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/weights random-init \(seed 0\)/);
  });

  it('a checkpoint\'s own preprocessing is the model\'s, with or without architecture flags; one that conflicts is refused', async () => {
    // Weights as `import --save-weights` writes them: the config and the preprocessing they were trained with.
    const cfg = resolveConfig({ depth: 20 });
    const saved = (name: string, preprocessing: Preprocessing): string => {
      const path = join(dir, `${name}.safetensors`);
      saveWeights(buildResNet(cfg), path, { config: JSON.stringify(cfg), preprocessing: JSON.stringify(preprocessing) });
      return path;
    };
    const routes = [['from-flags', ['--depth', '20']], ['from-file', []]] as const;
    const timm = saved('timm-pre', timmPreprocessing('basic'));
    for (const [route, flags] of routes) {
      const out = join(dir, `timm-pre-${route}.onnx`);
      const r = await runCli('export', ...flags, '--weights', timm, '-o', out, '-q');
      expect(r.code, r.err).toBe(0);
      expect(JSON.parse(metadataOf(out).preprocessing), route).toEqual(timmPreprocessing('basic'));
    }
    const bad = [
      [saved('gray', datasetPreprocessing('mnist')), /gray\.safetensors: metadata 'preprocessing' states L input \(1 channel\), but the network from (the architecture flags|its metadata 'config'), pre-act ResNet-20 \(CIFAR-10, 10 classes\), takes 3-channel input/],
      [
        saved('small-mean', { ...datasetPreprocessing('cifar10'), meanImage: encodeMeanImage(new Float32Array(3 * 28 * 28), [3, 28, 28]) }),
        /small-mean\.safetensors: metadata 'preprocessing': meanImage\.shape \[3, 28, 28\] is 28x28, but the crop is 32x32/,
      ],
    ] as const;
    for (const [path, message] of bad)
      for (const [route, flags] of routes) {
        const r = await runCli('export', ...flags, '--weights', path, '-o', join(dir, 'refused.onnx'), '-q');
        expect([r.code, r.err], route).toEqual([2, expect.stringMatching(message)]);
      }
    expect(existsSync(join(dir, 'refused.onnx'))).toBe(false);
  });

  it('--depth 7 lists the valid depths of each family', async () => {
    const r = await runCli('export', '--depth', '7');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/no pre-activation ResNet has depth 7\. Valid depths: CIFAR \(cifar10, cifar100\): 20 \(basic\).*ImageNet: 18 \(basic\)/);
  });

  it('conflicting flags say which conflict', async () => {
    let r = await runCli('export', '--depth', '110', '--gate-bias', '-3');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--gate-bias conflicts with --shortcut identity/);
    r = await runCli('export', '--depth', '50', '--stages', '3,4,6,3');
    expect(r.err).toMatch(/--depth and --stages conflict/);
    r = await runCli('export', '--depth', '164', '--projection', 'A');
    expect(r.err).toMatch(/basic units only/);
    r = await runCli('export', '--depth', '20', '--weights', 'x.safetensors', '--save-weights', 'y.safetensors');
    expect(r.err).toMatch(/--weights and --save-weights conflict/);
  });

  it('malformed values and unknown choices list what is allowed', async () => {
    let r = await runCli('export', '--depth', 'abc');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--depth must be an integer >= 1, got 'abc'/);
    r = await runCli('export', '--depth', '20', '--variant', 'foo');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/Allowed choices are full-preact, original, bn-after-add, relu-before-add, relu-only-preact/);
    r = await runCli('export', '--depth', '20', '--opset', '9');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--opset must be an integer from 13 to 21/);
  });

  it('an unwritable output path says so', async () => {
    let r = await runCli('export', '--depth', '20', '-o', '/proc/forbidden/x.onnx', '-q');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/error: cannot write \/proc\/forbidden\/x\.onnx: folder \/proc\/forbidden does not exist/);
    r = await runCli('export', '--depth', '20', '-o', '/proc/x.onnx', '-q');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/error: cannot write \/proc\/x\.onnx: ENOENT/);
  });

  it('a checkpoint of another depth names the tensor', async () => {
    const w = join(dir, 'other.safetensors');
    expect((await runCli('export', '--depth', '20', '-o', join(dir, 'o.onnx'), '--save-weights', w, '-q')).code).toBe(0);
    const r = await runCli('export', '--depth', '32', '-o', join(dir, 'c.onnx'), '--weights', w, '-q');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/does not fit this network: tensor 'stage1\.unit4\.bn1\.weight' \[16\] is missing/);
  });
});

describe('names: pre-activation nets are "preact", post-activation ones (paper Fig. 4a-c) are not', () => {
  it('graphName, the ONNX graph name and the default output path follow the variant', async () => {
    const names = Object.fromEntries(ACTIVATIONS.map((a) => [a, graphName(resolveConfig({ depth: 164, activation: a }))]));
    expect(names).toEqual({
      'full-preact': 'preact_resnet164_cifar10',
      'relu-only-preact': 'preact_resnet164_cifar10',
      original: 'resnet164_cifar10',
      'bn-after-add': 'resnet164_cifar10',
      'relu-before-add': 'resnet164_cifar10',
    });
    expect(defaultOutput(resolveConfig({ depth: 20, activation: 'original' }))).toMatch(/^models\/resnet20-cifar10-original(-[^/]*)?\.onnx$/);
    expect(defaultOutput(resolveConfig({ depth: 20 }))).toMatch(/^models\/preact-resnet20-cifar10(-[^/]*)?\.onnx$/);
    const out = join(dir, 'original.onnx');
    expect((await runCli('export', '--depth', '20', '--variant', 'original', '-o', out, '-q')).code).toBe(0);
    expect(onnx.ModelProto.decode(readFileSync(out)).graph?.name).toBe('resnet20_cifar10');
  });
});

describe('resnet-onnx info', () => {
  it('MNIST-style nets are summarised at 28x28, as export and train use them', async () => {
    for (const dataset of ['fashion-mnist', 'mnist']) {
      const r = await runCli('info', '--depth', '20', '--dataset', dataset);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/MACs @28/);
      expect(r.out).toMatch(/stage3\s+3\s+64\s+64\s+7x7/);
      expect(r.out).toMatch(/at 28x28/);
    }
    expect((await runCli('info', '--depth', '20')).out).toMatch(/MACs @32/);
  });


  it('prints the layer table with totals', async () => {
    const r = await runCli('info', '--depth', '200', '--input-size', '320');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/stage3\s+36\s+256\s+1024\s+20x20/);
    expect(r.out).toMatch(/total\s+64,666,152\s+30,625,382,400/);
  });
  it('--json', async () => {
    const r = await runCli('info', '--depth', '1001', '--json');
    expect(JSON.parse(r.out).params).toBe(10_327_706);
  });
});
