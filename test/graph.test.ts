// The graph DSL: shape inference, symbolic dims, errors that name the layer, deterministic init.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.js';
import { initValues } from '../src/graph/init.js';
import { batchNorm, conv, relu, subsampleAndPad } from '../src/graph/layers.js';
import { dimText, sameDim, shapeText, sym } from '../src/graph/types.js';

function image(b: GraphBuilder, c = 3) {
  return b.input('input', 'float32', [sym('N'), c, sym('H'), sym('W')]);
}

describe('shape inference', () => {
  it('infers conv output sizes for concrete inputs', () => {
    const b = new GraphBuilder('t');
    const x = b.input('input', 'float32', [2, 3, 224, 224]);
    const y = conv(b, x, 'conv', { out: 64, kernel: 7, stride: 2, pad: 3 });
    expect(y.shape).toEqual([2, 64, 112, 112]);
    const p = b.op1('MaxPool', [y], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'pool' });
    expect(p.shape).toEqual([2, 64, 56, 56]);
    const odd = conv(b, b.input('odd', 'float32', [1, 3, 33, 17]), 'c2', { out: 8, kernel: 3, stride: 2 });
    expect(odd.shape).toEqual([1, 8, 17, 9]);
  });

  it('keeps N, H, W symbolic and derives expressions from them', () => {
    const b = new GraphBuilder('t');
    const x = image(b);
    const y = conv(b, x, 'conv', { out: 16, kernel: 3, stride: 1 });
    expect(shapeText(y.shape)).toBe('[N, 16, H, W]');
    const z = conv(b, y, 'down', { out: 32, kernel: 3, stride: 2 });
    expect(dimText(z.shape[2])).toContain('H');
    expect(z.shape[0]).toEqual(x.shape[0]);
  });

  it('treats a strided 3x3 conv and a stride-2 subsample as the same size (so option A adds up)', () => {
    const b = new GraphBuilder('t');
    const x = conv(b, image(b), 'stem', { out: 16, kernel: 3 });
    const f = conv(b, x, 'conv', { out: 32, kernel: 3, stride: 2 });
    const s = subsampleAndPad(b, x, 'shortcut', 2, 32);
    expect(sameDim(f.shape[2], s.shape[2])).toBe(true);
    expect(s.shape[1]).toBe(32);
    expect(b.op1('Add', [s, f], {}, { name: 'add' }).shape[1]).toBe(32);
  });

  it('tells different symbolic sizes apart', () => {
    const b = new GraphBuilder('t');
    const x = image(b);
    const a = conv(b, x, 'a', { out: 4, kernel: 3, stride: 2 });
    const c = conv(b, x, 'c', { out: 4, kernel: 1, stride: 1, pad: 0 });
    expect(sameDim(a.shape[2], c.shape[2])).toBe(false);
    expect(() => b.op1('Add', [a, c], {}, { name: 'bad_add' })).toThrow(/bad_add.*do not broadcast/);
  });
});

describe('errors name the layer that made them', () => {
  it('channel mismatch', () => {
    const b = new GraphBuilder('t');
    const x = image(b);
    const w = b.scope('stage3', () => b.scope('unit12', () => b.param('conv2.weight', [8, 5, 3, 3], { kind: 'constant', value: 0 })));
    expect(() =>
      b.scope('stage3', () => b.scope('unit12', () => b.op1('Conv', [x, w], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv2' }))),
    ).toThrow(/^stage3\.unit12\.conv2: Conv: input has 3 channels but the weight \[8, 5, 3, 3\] expects 5/);
  });

  it('unknown attribute lists the allowed ones', () => {
    const b = new GraphBuilder('t');
    const x = image(b);
    expect(() => b.scope('head', () => b.op1('Relu', [x], { alpha: 1 }, { name: 'relu' }))).toThrow("head.relu: Relu has no attribute 'alpha' (allowed: none)");
    expect(() => b.op1('MaxPool', [x], { kernel: [3, 3] })).toThrow(/has no attribute 'kernel' \(allowed: kernel_shape, strides/);
  });

  it('wrong rank, wrong attribute kind, unknown op, duplicate names', () => {
    const b = new GraphBuilder('t');
    const x = image(b);
    const flat = b.op1('Flatten', [x], { axis: 1 }, { name: 'flat' });
    expect(() => b.op1('MaxPool', [flat], { kernel_shape: [2, 2] }, { name: 'pool' })).toThrow(/pool: MaxPool: X must have rank 4, got float32\[N, /);
    expect(() => b.op1('Flatten', [x], { axis: 1.5 }, { name: 'f2' })).toThrow(/attribute 'axis' of Flatten must be of kind int/);
    expect(() => b.op1('Convolution', [x])).toThrow(/unknown op 'Convolution'/);
    relu(b, x, 'r');
    expect(() => relu(b, x, 'r')).toThrow(/'r' already exists|already used/);
  });

  it('batch norm channel count must match', () => {
    const b = new GraphBuilder('t');
    const x = image(b);
    const y = batchNorm(b, x, 'bn');
    expect(y.shape[1]).toBe(3);
    const gamma = b.param('g', [4], { kind: 'constant', value: 1 });
    expect(() => b.op1('BatchNormalization', [x, gamma, gamma, gamma, gamma], {}, { name: 'bn2' })).toThrow(/bn2: BatchNormalization: scale \[4\] must be \[3\]/);
  });
});

describe('parameters', () => {
  it('registers names under the scope and initialises deterministically per (seed, name)', () => {
    const b1 = new GraphBuilder('t', 7);
    const x1 = image(b1);
    b1.scope('stage1', () => b1.scope('unit1', () => conv(b1, x1, 'conv1', { out: 16, kernel: 3 })));
    b1.output(x1);
    const w = b1.build().initializers.find((i) => i.name === 'stage1.unit1.conv1.weight')!;
    expect(w.data.dims).toEqual([16, 3, 3, 3]);
    const a = w.data.values() as Float32Array;
    expect(Array.from(a)).toEqual(Array.from(initValues({ kind: 'he-normal', fanOut: 9 * 16 }, 16 * 27, 7, 'stage1.unit1.conv1.weight')));
    const other = initValues({ kind: 'he-normal', fanOut: 9 * 16 }, 16 * 27, 8, 'stage1.unit1.conv1.weight');
    expect(Array.from(a)).not.toEqual(Array.from(other));
  });

  it('He init has the paper\'s standard deviation sqrt(2 / (k*k*out))', () => {
    const v = initValues({ kind: 'he-normal', fanOut: 3 * 3 * 64 }, 200_000, 1, 'w');
    const mean = v.reduce((s, x) => s + x, 0) / v.length;
    const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.002);
    expect(std).toBeCloseTo(Math.sqrt(2 / 576), 3);
  });
});
