// The family: parameter counts and MACs against the SPEC, every variant builds, bad requests explain themselves.
import { describe, expect, it } from 'vitest';
import { parameterCount } from '../src/graph/graph.js';
import { ACTIVATIONS, type ModelRequest, SHORTCUTS, resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { summarize } from '../src/models/summary.js';

const SPEC_PARAMS: [ModelRequest, number][] = [
  [{ depth: 110 }, 1_727_962],
  [{ depth: 110, projection: 'B' }, 1_730_522],
  [{ depth: 20 }, 269_722],
  [{ depth: 110, unit: 'single' }, 1_727_962],
  [{ depth: 164 }, 1_703_258],
  [{ depth: 1001 }, 10_327_706],
  [{ depth: 164, dataset: 'cifar100' }, 1_726_388],
  [{ depth: 1001, dataset: 'cifar100' }, 10_350_836],
  [{ depth: 18 }, 11_687_720],
  [{ depth: 34 }, 21_795_880],
  [{ depth: 50 }, 25_549_352],
  [{ depth: 101 }, 44_541_480],
  [{ depth: 152 }, 60_185_128],
  [{ depth: 200 }, 64_666_152],
];

describe('parameter counts equal the SPEC', () => {
  for (const [req, want] of SPEC_PARAMS) {
    it(`${JSON.stringify(req)} has ${want.toLocaleString('en-US')} parameters`, () => {
      expect(parameterCount(buildResNet(resolveConfig(req)))).toBe(want);
    });
  }

  it('ResNet-1001 without BN parameters is the paper\'s 10.2M (conv + FC = 10,178,490)', () => {
    const g = buildResNet(resolveConfig({ depth: 1001 }));
    const noBn = g.initializers
      .filter((i) => i.role === 'param' && !/\.bn\d?\.|\.bn$/.test(i.name.replace(/\.(weight|bias)$/, '.')))
      .reduce((s, i) => s + i.data.dims.reduce((p, d) => p * d, 1), 0);
    expect(noBn).toBe(10_178_490);
  });
});

describe('MACs equal the SPEC', () => {
  const cases: [ModelRequest, number, number][] = [
    [{ depth: 110 }, 32, 252.9e6],
    [{ depth: 164 }, 32, 244.5e6],
    [{ depth: 1001 }, 32, 1487.8e6],
    [{ depth: 18 }, 224, 1.81e9],
    [{ depth: 18 }, 320, 3.7e9],
    [{ depth: 34 }, 224, 3.66e9],
    [{ depth: 50 }, 224, 4.09e9],
    [{ depth: 101 }, 320, 15.92e9],
    [{ depth: 152 }, 224, 11.51e9],
    [{ depth: 200 }, 224, 15.01e9],
    [{ depth: 200 }, 320, 30.63e9],
  ];
  for (const [req, size, want] of cases) {
    it(`${JSON.stringify(req)} at ${size}x${size}: ${want / 1e9} GMACs`, () => {
      const s = summarize(resolveConfig(req), size);
      expect(Math.abs(s.macs - want) / want).toBeLessThan(0.003);
      expect(s.params).toBe(parameterCount(buildResNet(resolveConfig(req))));
    });
  }
});

describe('architecture details', () => {
  it('CIFAR bottleneck: stride on the first 1x1, projection on the first unit of all three stages', () => {
    const g = buildResNet(resolveConfig({ depth: 164 }), { inputShape: [1, 3, 32, 32] });
    const conv1 = g.nodes.find((n) => n.name === 'stage2.unit1.conv1')!;
    expect(conv1.attrs.strides.value).toEqual([2, 2]);
    expect(g.nodes.find((n) => n.name === 'stage2.unit1.conv2')!.attrs.strides.value).toEqual([1, 1]);
    for (const s of [1, 2, 3]) expect(g.initializers.some((i) => i.name === `stage${s}.unit1.shortcut.weight`)).toBe(true);
    expect(g.initializers.some((i) => i.name === 'stage1.unit2.shortcut.weight')).toBe(false);
  });

  it('ImageNet bottleneck: stride on the 3x3; stage 1 unit 1 has no pre-activation of its own', () => {
    const g = buildResNet(resolveConfig({ depth: 50 }));
    expect(g.nodes.find((n) => n.name === 'stage2.unit1.conv2')!.attrs.strides.value).toEqual([2, 2]);
    expect(g.nodes.some((n) => n.name === 'stage1.unit1.bn1')).toBe(false);
    expect(g.nodes.some((n) => n.name === 'stage2.unit1.bn1')).toBe(true);
  });

  it('first unit of a stage: shortcut reads the pre-activated tensor; later units read the raw input', () => {
    const g = buildResNet(resolveConfig({ depth: 164 }));
    const shortcut = g.nodes.find((n) => n.name === 'stage2.unit1.shortcut')!;
    expect(shortcut.inputs[0]).toBe('stage2.unit1.relu1');
    const add = g.nodes.find((n) => n.name === 'stage2.unit2.add')!;
    expect(add.inputs[0]).toBe('stage2.unit1.add');
  });

  it('option A shortcut has no parameters and appends zero channels', () => {
    const g = buildResNet(resolveConfig({ depth: 20 }));
    expect(g.initializers.some((i) => i.name.includes('shortcut') && i.role === 'param')).toBe(false);
    expect(g.nodes.find((n) => n.name === 'stage2.unit1.shortcut.pad')).toBeDefined();
  });

  it('every unit variant and every shortcut variant builds, at a CIFAR basic, a CIFAR bottleneck and an ImageNet depth', () => {
    for (const depth of [20, 164, 18]) {
      for (const activation of ACTIVATIONS) {
        for (const kind of SHORTCUTS) {
          const g = buildResNet(resolveConfig({ depth, activation, shortcut: { kind } }));
          expect(g.outputs.map((o) => o.name)).toEqual(['logits']);
        }
      }
    }
  });

  it('gating shortcuts carry a 1x1 conv with bias initialised to b_g', () => {
    const g = buildResNet(resolveConfig({ depth: 20, shortcut: { kind: 'exclusive-gating', gateBias: -3 } }));
    const bias = g.initializers.find((i) => i.name === 'stage1.unit2.gate.bias')!;
    expect(Array.from(bias.data.values() as Float32Array).every((v) => v === -3)).toBe(true);
  });
});

describe('bad requests say what is allowed', () => {
  it('an unknown depth lists the valid depths of each family', () => {
    expect(() => resolveConfig({ depth: 7 })).toThrow(/no pre-activation ResNet has depth 7\. Valid depths: CIFAR .*110 \(basic\).*ImageNet: 18 \(basic\).*200 \(bottleneck\)/);
  });
  it('a depth of the other family', () => {
    expect(() => resolveConfig({ depth: 200, dataset: 'cifar10' })).toThrow(/depth 200 is not a CIFAR pre-activation ResNet/);
  });
  it('conflicting choices', () => {
    expect(() => resolveConfig({ depth: 164, projection: 'A' })).toThrow(/basic units only/);
    expect(() => resolveConfig({ depth: 50, unit: 'basic' })).toThrow(/--unit basic conflicts with --depth 50/);
    expect(() => resolveConfig({ depth: 50, stages: [3, 4, 6, 3] })).toThrow(/--depth and --stages conflict/);
  });
  it('custom stage lists', () => {
    const cfg = resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'bottleneck' });
    expect(cfg.stages.map((s) => s.units)).toEqual([1, 1, 1, 1]);
    expect(buildResNet(cfg).outputs[0].shape[1]).toBe(1000);
  });
});
