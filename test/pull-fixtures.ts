// Small files in the real published layouts, written in TypeScript for the `pull` tests (no Python): a Lua Torch
// .t7 with the module tree of the released fb.resnet.torch ResNet-200 (every branch starts with BN-ReLU,
// projections are conv + BN on the raw input, convs carry biases) with one bottleneck unit per stage, and a timm
// ResNetV2 state dict (basic blocks, one per stage) as safetensors. Every .t7 tensor is a view into one shared
// storage, as `model:getParameters()` leaves real checkpoints, which keeps the file small.

import { writeFileSync } from 'node:fs';
import { writeSafeTensors } from '../src/export/safetensors.js';
import { LuaObject, LuaStorage, LuaTable, LuaTensor, type LuaValue, t7 } from './t7-writer.js';

const WIDTHS = [64, 128, 256, 512];

/** A released-ResNet-200-layout .t7 with bottleneck units [1, 1, 1, 1] (ImageNet widths) and `classes` outputs. */
export function fbResNetT7(classes = 10): Uint8Array {
  const largest = 512 * 512 * 9;
  // Values in [0.5, 1.5): positive, so running variances are valid.
  const storage = new LuaStorage('Float', Array.from({ length: largest }, (_, i) => 0.5 + ((i * 37) % 101) / 101));
  const view = (sizes: number[]): LuaTensor => {
    const strides = sizes.map((_, i) => sizes.slice(i + 1).reduce((p, d) => p * d, 1));
    return new LuaTensor('Float', storage, sizes, strides, 0);
  };
  const mod = (cls: string, fields: Record<string, LuaValue> = {}): LuaObject => {
    const t = new LuaTable();
    t.set('train', false);
    for (const [k, v] of Object.entries(fields)) t.set(k, v);
    return new LuaObject(cls, t);
  };
  const container = (cls: string, children: LuaObject[]): LuaObject => {
    const list = new LuaTable();
    children.forEach((c, i) => list.set(i + 1, c));
    return mod(cls, { modules: list });
  };
  const seq = (...children: LuaObject[]): LuaObject => container('nn.Sequential', children);
  const conv = (inC: number, outC: number, k: number, stride: number, pad: number): LuaObject =>
    mod('cudnn.SpatialConvolution', { nInputPlane: inC, nOutputPlane: outC, kW: k, kH: k, dW: stride, dH: stride, padW: pad, padH: pad, weight: view([outC, inC, k, k]), bias: view([outC]) });
  const bn = (c: number): LuaObject => mod('nn.SpatialBatchNormalization', { eps: 1e-5, weight: view([c]), bias: view([c]), running_mean: view([c]), running_var: view([c]) });
  const relu = (): LuaObject => mod('cudnn.ReLU');

  const mods: LuaObject[] = [conv(3, 64, 7, 2, 3), bn(64), relu(), mod('nn.SpatialMaxPooling', { kW: 3, kH: 3, dW: 2, dH: 2, padW: 1, padH: 1 })];
  let inC = 64;
  WIDTHS.forEach((w, s) => {
    const out = 4 * w;
    const stride = s === 0 ? 1 : 2;
    const branch = seq(bn(inC), relu(), conv(inC, w, 1, 1, 0), bn(w), relu(), conv(w, w, 3, stride, 1), bn(w), relu(), conv(w, out, 1, 1, 0));
    const shortcut = seq(conv(inC, out, 1, stride, 0), bn(out));
    mods.push(seq(seq(container('nn.ConcatTable', [branch, shortcut]), mod('nn.CAddTable'))));
    inC = out;
  });
  mods.push(mod('nn.Copy'), bn(inC), relu(), mod('cudnn.SpatialAveragePooling', { kW: 7, kH: 7, dW: 1, dH: 1 }), mod('nn.View'), mod('nn.Linear', { weight: view([classes, inC]), bias: view([classes]) }));
  return t7(seq(...mods));
}

export function writeFbResNetT7(path: string, classes = 10): void {
  writeFileSync(path, fbResNetT7(classes));
}

/** A timm ResNetV2 state dict (basic blocks [1, 1, 1, 1], as resnetv2_18 with one block per stage) as safetensors. */
export function writeTimmResNetV2(path: string, classes = 10): void {
  const tensors: { name: string; shape: number[]; values: () => Float32Array }[] = [];
  const put = (name: string, shape: number[], v = 0.01): void => {
    const n = shape.reduce((p, d) => p * d, 1);
    tensors.push({ name, shape, values: () => new Float32Array(n).fill(v) });
  };
  const norm = (key: string, c: number): void => {
    put(`${key}.weight`, [c], 1);
    put(`${key}.bias`, [c], 0);
    put(`${key}.running_mean`, [c], 0);
    put(`${key}.running_var`, [c], 1);
  };
  put('stem.conv.weight', [64, 3, 7, 7]);
  let inC = 64;
  WIDTHS.forEach((w, s) => {
    const key = `stages.${s}.blocks.0`;
    norm(`${key}.norm1`, inC);
    put(`${key}.conv1.weight`, [w, inC, 3, 3]);
    norm(`${key}.norm2`, w);
    put(`${key}.conv2.weight`, [w, w, 3, 3]);
    if (s > 0) put(`${key}.downsample.conv.weight`, [w, inC, 1, 1]);
    inC = w;
  });
  norm('norm', inC);
  put('head.fc.weight', [classes, inC, 1, 1]);
  put('head.fc.bias', [classes]);
  writeSafeTensors(path, tensors);
}
