// The structural quirks of published pre-activation ResNets as optional layout fields of a config: the clean
// family is untouched, imported layouts have the parameter counts their sources report, and configs recorded
// in checkpoints are re-validated when read back.
import { describe, expect, it } from 'vitest';
import { parameterCount } from '../src/graph/graph.js';
import { ConfigError, type Layout, configFromJson, resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';

const FB: Partial<Layout> = { origin: 'fb.resnet.torch', firstPreact: 'branch', projectionNorm: true, convBias: true };
const TIMM: Partial<Layout> = { origin: 'timm', stemNorm: false, firstPreact: 'split-if-projecting' };

describe('layouts', () => {
  it('a config without a layout is the clean family, serialised as before', () => {
    const cfg = resolveConfig({ depth: 200 });
    expect('layout' in cfg).toBe(false);
    expect(parameterCount(buildResNet(cfg))).toBe(64_666_152);
  });

  it("fb.resnet.torch's released ResNet-200: the SPEC's count plus conv biases, projection BNs and stage 1 unit 1's own BN", () => {
    // Extra parameters: a bias per conv output channel (stem 64; per unit w + w + 4w), bias + BN gamma/beta on
    // the four projections (outputs 256, 512, 1024, 2048), and gamma/beta of stage1.unit1.bn1 (64 channels).
    const units = [3, 24, 36, 3];
    const widths = [64, 128, 256, 512];
    const extra = 64 + units.reduce((s, n, i) => s + n * 6 * widths[i], 0) + 3 * (256 + 512 + 1024 + 2048) + 2 * 64;
    const g = buildResNet(resolveConfig({ depth: 200, layout: FB }));
    expect(parameterCount(g)).toBe(64_666_152 + extra);
    const names = new Set(g.initializers.map((i) => i.name));
    for (const n of ['stem.conv.bias', 'stage1.unit1.bn1.weight', 'stage2.unit1.shortcut.bias', 'stage2.unit1.shortcut_bn.running_var']) expect(names).toContain(n);
    // The shortcut reads the raw unit input: the projection conv's input is the unit's input, not bn1's ReLU.
    const proj = g.nodes.find((n) => n.name === 'stage2.unit1.shortcut')!;
    expect(proj.inputs[0]).toBe('stage1.unit3.add');
  });

  it("timm's resnetv2_50 / resnetv2_101 have the SPEC's counts (no stem BN, stage 1 unit 1 normalises itself)", () => {
    for (const [depth, params] of [
      [50, 25_549_352],
      [101, 44_541_480],
    ]) {
      const g = buildResNet(resolveConfig({ depth, layout: TIMM }));
      expect(parameterCount(g)).toBe(params);
      const names = new Set(g.initializers.map((i) => i.name));
      expect(names.has('stem.bn.weight')).toBe(false);
      expect(names.has('stage1.unit1.bn1.weight')).toBe(true);
      expect(g.nodes.find((n) => n.name === 'stem.pool')!.inputs[0]).toBe('stem.conv');
    }
  });

  it('layouts are validated', () => {
    expect(() => resolveConfig({ depth: 110, layout: FB })).toThrow(/a layout describes imported full pre-activation ImageNet nets/);
    expect(() => resolveConfig({ depth: 50, layout: { origin: 'x', stemNorm: 'no' as unknown as boolean } })).toThrow(/layout\.stemNorm must be true or false/);
    expect(() => resolveConfig({ depth: 50, layout: { origin: 'x', extra: 1 } as Partial<Layout> })).toThrow(/unknown layout field\(s\) extra/);
  });
});

describe('configs recorded in checkpoints', () => {
  it('read back to the same config', () => {
    for (const cfg of [
      resolveConfig({ depth: 20, unit: 'single', dataset: 'cifar100' }),
      resolveConfig({ dataset: 'imagenet', stages: [1, 2], unit: 'basic', classes: 10, shortcut: { kind: 'exclusive-gating', gateBias: -2 }, activation: 'relu-only-preact' }),
      resolveConfig({ depth: 200, layout: FB }),
      resolveConfig({ dataset: 'imagenet', stages: [2, 1, 1, 1], layout: TIMM }),
    ])
      expect(configFromJson(JSON.stringify(cfg))).toEqual(cfg);
  });

  it('a config this version would not build is refused, saying why', () => {
    const cfg = resolveConfig({ depth: 50 });
    const tampered = { ...cfg, stages: cfg.stages.map((s, i) => (i === 1 ? { ...s, width: 100 } : s)) };
    expect(() => configFromJson(JSON.stringify(tampered), 'x.safetensors: metadata \'config\'')).toThrow(ConfigError);
    expect(() => configFromJson(JSON.stringify(tampered), 'm')).toThrow(/^m does not describe a network this version builds: it differs from \{/);
    expect(() => configFromJson('{"depth": 7}', 'm')).toThrow(/^m does not describe a network this version builds: no pre-activation ResNet has depth 7/);
    expect(() => configFromJson('[1]', 'm')).toThrow(/m is not a JSON object/);
    expect(() => configFromJson('{', 'm')).toThrow(/m is not JSON/);
  });
});
