// Maps the nn/cudnn module tree of fb.resnet.torch's pre-activation ResNets (models/preresnet.lua: the early
// version that trained the released ResNet-200, and the current one) onto our family. Every module is checked
// against what preresnet.lua builds; anything else is an error naming its path, e.g. `model.modules[6]
// .modules[1].modules[1].modules[1].modules[3] (cudnn.SpatialConvolution)`.

import { BN_EPSILON } from '../graph/layers.js';
import { IMAGENET_DEPTHS, type Layout, type ModelRequest, type ResNetConfig, type UnitKind, resolveConfig } from '../models/config.js';
import { ImportError, type SourceTensor } from './imported.js';
import { count, withArticle } from './text.js';
import { T7Object, T7Table, T7Tensor, type T7Value, describeValue } from './t7.js';

const KINDS = [
  'Sequential',
  'ConcatTable',
  'CAddTable',
  'Identity',
  'SpatialConvolution',
  'SpatialBatchNormalization',
  'ReLU',
  'SpatialMaxPooling',
  'SpatialAveragePooling',
  'Copy',
  'View',
  'Reshape',
  'Linear',
] as const;
type Kind = (typeof KINDS)[number];

/** A module of the tree with its path from the root, for messages. */
class Mod {
  readonly kind: Kind;
  constructor(
    readonly obj: T7Object,
    readonly path: string,
  ) {
    const short = obj.className.replace(/^(nn|cudnn)\./, '').replace(/^SpatialConvolutionMM$/, 'SpatialConvolution');
    if (!/^(nn|cudnn)\./.test(obj.className) || !(KINDS as readonly string[]).includes(short))
      throw new ImportError(
        `${path} is ${withArticle(obj.className)}, which fb.resnet.torch's pre-activation ResNets do not use (known: nn/cudnn ${KINDS.join(', ')})`,
      );
    this.kind = short as Kind;
  }
  get at(): string {
    return `${this.path} (${this.obj.className})`;
  }
  fail(message: string): never {
    throw new ImportError(`${this.at}: ${message}`);
  }
  num(key: string, dflt?: number): number {
    const v = this.obj.get(key);
    if ((v === undefined || v === null) && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) return this.fail(`field '${key}' should be a number, found ${describeValue(v)}`);
    return v;
  }
  int(key: string, dflt?: number): number {
    const v = this.num(key, dflt);
    if (!Number.isInteger(v) || v < 0) this.fail(`field '${key}' should be a non-negative integer, found ${v}`);
    return v;
  }
  tensor(key: string, required: boolean): T7Tensor | null {
    const v = this.obj.get(key);
    if (v === undefined || v === null) return required ? this.fail(`has no '${key}' tensor`) : null;
    if (!(v instanceof T7Tensor)) return this.fail(`field '${key}' should be a tensor, found ${describeValue(v)}`);
    if (required && v.numel === 0) this.fail(`its '${key}' tensor is empty`);
    return v.numel === 0 ? null : v;
  }
  children(): Mod[] {
    const list = this.obj.get('modules');
    if (!(list instanceof T7Table)) return this.fail(`has no 'modules' list (found ${describeValue(list)})`);
    return list.array().map((v, i) => asMod(v, `${this.path}.modules[${i + 1}]`));
  }
}

function asMod(v: T7Value | undefined, path: string): Mod {
  if (!(v instanceof T7Object)) throw new ImportError(`${path} should be an nn module, found ${describeValue(v)}`);
  return new Mod(v, path);
}

function from(t: T7Tensor, m: Mod, key: string): SourceTensor {
  return { dims: [...t.sizes], values: () => t.toFloat32(), from: `${m.path}.${key}` };
}

interface ConvInfo {
  mod: Mod;
  inC: number;
  outC: number;
  k: number;
  stride: number;
  pad: number;
  weight: T7Tensor;
  bias: T7Tensor | null;
}

function convOf(m: Mod): ConvInfo {
  if (m.kind !== 'SpatialConvolution') m.fail('expected a SpatialConvolution here');
  const inC = m.int('nInputPlane');
  const outC = m.int('nOutputPlane');
  const [kW, kH, dW, dH] = [m.int('kW'), m.int('kH'), m.int('dW', 1), m.int('dH', 1)];
  const padW = m.int('padW', m.int('padding', 0));
  const padH = m.int('padH', m.int('padding', 0));
  if (m.int('groups', 1) !== 1) m.fail(`grouped convolution (groups ${m.num('groups')}) is not part of a pre-activation ResNet`);
  if (kW !== kH || dW !== dH || padW !== padH) m.fail(`kernel ${kW}x${kH}, stride ${dW}x${dH}, padding ${padW}x${padH}: only square ones are supported`);
  const weight = m.tensor('weight', true)!;
  if (weight.numel !== outC * inC * kW * kH) m.fail(`weight [${weight.sizes.join(', ')}] does not hold ${outC}x${inC}x${kH}x${kW} values`);
  const bias = m.tensor('bias', false);
  if (bias && bias.numel !== outC) m.fail(`bias [${bias.sizes.join(', ')}] does not hold ${outC} values`);
  return { mod: m, inC, outC, k: kW, stride: dW, pad: padW, weight, bias };
}

function expectConv(c: ConvInfo, role: string, want: { inC: number; outC?: number; k: number; stride: number; pad: number }): void {
  const wantText = `${want.k}x${want.k}, stride ${want.stride}, padding ${want.pad}`;
  if (c.k !== want.k || c.stride !== want.stride || c.pad !== want.pad)
    c.mod.fail(`${role} should be ${wantText}; it is ${c.k}x${c.k}, stride ${c.stride}, padding ${c.pad}`);
  if (c.inC !== want.inC) c.mod.fail(`${role} reads ${count(c.inC, 'channel')}, but ${want.inC} ${want.inC === 1 ? 'arrives' : 'arrive'} there`);
  if (want.outC !== undefined && c.outC !== want.outC) c.mod.fail(`${role} should output ${count(want.outC, 'channel')}; it outputs ${c.outC}`);
}

/** BatchNorm tensors in our convention (eps 1e-5, running variance), from nn's V2 (running_var) or V1 (running_std = 1/sqrt(var + eps)). */
function bnTensors(m: Mod, prefix: string, channels: number, out: Map<string, SourceTensor>): void {
  if (m.kind !== 'SpatialBatchNormalization') m.fail('expected a SpatialBatchNormalization here');
  const eps = m.num('eps', 1e-5);
  if (!(eps > 0)) m.fail(`eps is ${eps}`);
  const mean = m.tensor('running_mean', true)!;
  const variance = m.tensor('running_var', false);
  const invStd = variance ? null : m.tensor('running_std', false);
  if (!variance && !invStd) m.fail('has neither running_var (nn BatchNormalization V2) nor running_std (V1)');
  const weight = m.tensor('weight', false);
  const bias = m.tensor('bias', false);
  for (const [key, t] of [['running_mean', mean], ['running_var', variance], ['running_std', invStd], ['weight', weight], ['bias', bias]] as const)
    if (t && t.numel !== channels) m.fail(`${key} has ${count(t.numel, 'value')}, but ${count(channels, 'channel')} ${channels === 1 ? 'arrives' : 'arrive'} there`);
  const filled = (v: number) => () => new Float32Array(channels).fill(v);
  out.set(`${prefix}.weight`, weight ? from(weight, m, 'weight') : { dims: [channels], values: filled(1), from: `${m.path}.weight (affine = false: 1)` });
  out.set(`${prefix}.bias`, bias ? from(bias, m, 'bias') : { dims: [channels], values: filled(0), from: `${m.path}.bias (affine = false: 0)` });
  out.set(`${prefix}.running_mean`, from(mean, m, 'running_mean'));
  if (variance) {
    // Our graphs use eps = 1e-5; another eps moves into the variance: var' + 1e-5 = var + eps.
    const t = from(variance, m, 'running_var');
    out.set(`${prefix}.running_var`, eps === BN_EPSILON ? t : { ...t, values: () => t.values().map((v) => v + eps - BN_EPSILON) });
  } else {
    // V1 stored the running inverse standard deviation: y = (x - mean) * running_std * weight + bias.
    const t = from(invStd!, m, 'running_std');
    out.set(`${prefix}.running_var`, {
      dims: t.dims,
      from: `${t.from} (nn V1 inverse std, as 1/running_std^2 - ${BN_EPSILON})`,
      values: () =>
        t.values().map((s, i) => {
          if (!(s > 0)) throw new ImportError(`${m.at}: running_std[${i}] is ${s}; an inverse standard deviation must be positive`);
          return 1 / (s * s) - BN_EPSILON;
        }),
    });
  }
}

function expectKind(m: Mod | undefined, kind: Kind, role: string, after: string): Mod {
  if (!m) throw new ImportError(`${after} ends where ${role} (${kind}) should follow`);
  if (m.kind !== kind) m.fail(`expected ${role} (${kind}) here`);
  return m;
}

function bnChannels(m: Mod): number {
  const t = m.tensor('running_mean', true)!;
  return t.numel;
}

// ---------------------------------------------------------------------------------------------------------
// Units

interface UnitInfo {
  mod: Mod;
  /** 'split': BN-ReLU before the ConcatTable (current preresnet.lua, first units); 'branch': BN-ReLU at the
   * start of the residual branch; 'none': neither (stage 1 unit 1 after the stem's BN-ReLU). */
  form: 'split' | 'branch' | 'none';
  kind: UnitKind;
  /** BN before conv i (index 0: the pre-activation, whichever form), null where there is none. */
  bns: (Mod | null)[];
  convs: ConvInfo[];
  shortcut: { conv: ConvInfo; bn: Mod | null } | null;
  inC: number;
  outC: number;
  width: number;
  stride: number;
}

function isShortcut(m: Mod): boolean {
  if (m.kind === 'Identity' || m.kind === 'SpatialConvolution') return true;
  if (m.kind !== 'Sequential') return false;
  const kids = m.children();
  return kids.filter((k) => k.kind === 'SpatialConvolution').length <= 1;
}

function parseUnit(m: Mod, inC: number, stride: number): UnitInfo {
  if (m.kind !== 'Sequential') m.fail('a residual unit should be an nn.Sequential');
  const kids = m.children();
  let i = 0;
  let preBn: Mod | null = null;
  if (kids[0]?.kind === 'SpatialBatchNormalization') {
    preBn = kids[0];
    expectKind(kids[1], 'ReLU', 'the ReLU of the pre-activation', m.at);
    i = 2;
  }
  const concat = expectKind(kids[i], 'ConcatTable', 'the split into residual branch and shortcut', m.at);
  expectKind(kids[i + 1], 'CAddTable', 'the addition', m.at);
  if (kids.length !== i + 2) kids[i + 2].fail('unexpected module after the addition of a residual unit');
  let [branch, shortcut] = concat.children();
  if (!branch || !shortcut || concat.children().length !== 2) concat.fail('a unit\'s ConcatTable should hold a residual branch and a shortcut');
  if (isShortcut(branch) && !isShortcut(shortcut)) [branch, shortcut] = [shortcut, branch];
  if (branch.kind !== 'Sequential') branch.fail('the residual branch should be an nn.Sequential');

  const layers = branch.children();
  let j = 0;
  const bns: (Mod | null)[] = [preBn];
  if (layers[0]?.kind === 'SpatialBatchNormalization') {
    if (preBn) layers[0].fail('the unit is pre-activated twice (before the split and in the branch)');
    bns[0] = layers[0];
    expectKind(layers[1], 'ReLU', 'the ReLU of the pre-activation', branch.at);
    j = 2;
  }
  const convs: ConvInfo[] = [];
  for (;;) {
    const c = layers[j];
    if (!c) branch.fail('the residual branch ends without a convolution');
    convs.push(convOf(c));
    j++;
    if (j === layers.length) break;
    bns.push(expectKind(layers[j], 'SpatialBatchNormalization', 'a BN between convolutions', branch.at));
    expectKind(layers[j + 1], 'ReLU', 'a ReLU between convolutions', branch.at);
    j += 2;
  }
  let kind: UnitKind;
  let width: number;
  let outC: number;
  if (convs.length === 2) {
    kind = 'basic';
    width = outC = convs[0].outC;
    expectConv(convs[0], 'the first 3x3 convolution', { inC, k: 3, stride, pad: 1 });
    expectConv(convs[1], 'the second 3x3 convolution', { inC: width, outC: width, k: 3, stride: 1, pad: 1 });
  } else if (convs.length === 3) {
    kind = 'bottleneck';
    width = convs[0].outC;
    outC = 4 * width;
    expectConv(convs[0], 'the 1x1 reduction', { inC, k: 1, stride: 1, pad: 0 });
    expectConv(convs[1], 'the 3x3 convolution', { inC: width, outC: width, k: 3, stride, pad: 1 });
    expectConv(convs[2], 'the 1x1 expansion', { inC: width, outC, k: 1, stride: 1, pad: 0 });
  } else return branch.fail(`a residual branch with ${count(convs.length, 'convolution')} is neither a basic (2) nor a bottleneck (3) unit`);

  let sc: UnitInfo['shortcut'] = null;
  if (shortcut.kind !== 'Identity') {
    let parts = [shortcut];
    if (shortcut.kind === 'Sequential') parts = shortcut.children();
    if (parts[0]?.kind !== 'SpatialConvolution' || parts.length > 2 || (parts[1] && parts[1].kind !== 'SpatialBatchNormalization'))
      shortcut.fail('the shortcut should be nn.Identity or a 1x1 convolution, optionally followed by BN (shortcut type B); the zero-padding type A is not supported');
    const conv = convOf(parts[0]);
    expectConv(conv, 'the projection shortcut', { inC, outC, k: 1, stride, pad: 0 });
    sc = { conv, bn: parts[1] ?? null };
  } else if (inC !== outC || stride !== 1) shortcut.fail(`an identity shortcut cannot take ${count(inC, 'channel')} at stride ${stride} to ${count(outC, 'channel')}`);
  const form = preBn ? 'split' : bns[0] ? 'branch' : 'none';
  return { mod: m, form, kind, bns, convs, shortcut: sc, inC, outC, width, stride };
}

// ---------------------------------------------------------------------------------------------------------
// The network

export interface FbMapping {
  cfg: ResNetConfig;
  tensors: Map<string, SourceTensor>;
  notes: string[];
}

const WIDTHS = [64, 128, 256, 512];

/** Maps a loaded .t7 value (the model) to our family; `name` is used in messages. */
export function mapFbResNet(root: T7Value): FbMapping {
  if (root instanceof T7Object && root.className === 'nn.gModule')
    throw new ImportError('model is an nngraph gModule; fb.resnet.torch ResNets are nn.Sequential module trees, and only those are imported');
  if (root instanceof T7Object && root.className === 'nn.DataParallelTable')
    throw new ImportError('model is an nn.DataParallelTable; save the inner model (model:get(1)) as fb.resnet.torch checkpoints do');
  const top = asMod(root, 'model');
  if (top.kind !== 'Sequential') top.fail('the model should be an nn.Sequential');
  const kids = top.children();
  const notes: string[] = [];
  let i = 0;
  const next = (): Mod | undefined => kids[i++];

  const stemConv = convOf(expectKind(next(), 'SpatialConvolution', 'the stem convolution', top.at));
  expectConv(stemConv, 'the stem convolution', { inC: stemConv.inC, outC: 64, k: 7, stride: 2, pad: 3 });
  let stemBn: Mod | null = null;
  if (kids[i]?.kind === 'SpatialBatchNormalization') {
    stemBn = next()!;
    expectKind(next(), 'ReLU', 'the stem ReLU', top.at);
  }
  const pool = expectKind(next(), 'SpatialMaxPooling', 'the stem max pooling', top.at);
  const [pk, ps, pp] = [pool.int('kW'), pool.int('dW'), pool.int('padW', 0)];
  if (pk !== 3 || pool.int('kH') !== 3 || ps !== 2 || pool.int('dH') !== 2 || pp !== 1 || pool.int('padH', 0) !== 1)
    pool.fail(`the stem max pooling should be 3x3, stride 2, padding 1; it is ${pk}x${pool.int('kH')}, stride ${ps}, padding ${pp}`);
  if (pool.obj.get('ceil_mode') === true) pool.fail('ceil mode is not supported (fb.resnet.torch pools with floor)');

  const stages: UnitInfo[][] = [];
  let channels = 64;
  while (kids[i]?.kind === 'Sequential') {
    const stageMod = next()!;
    const s = stages.length;
    if (s >= 4) stageMod.fail('an ImageNet pre-activation ResNet has 4 stages; this is a fifth');
    const units = stageMod.children().map((u, k) => {
      const unit = parseUnit(u, channels, k === 0 && s > 0 ? 2 : 1);
      channels = unit.outC;
      return unit;
    });
    if (units.length === 0) stageMod.fail('an empty stage');
    stages.push(units);
  }
  if (stages.length === 0) throw new ImportError(`${top.at}: no stage of residual units (nn.Sequential) follows the stem`);

  while (kids[i]?.kind === 'Copy' || kids[i]?.kind === 'Identity') i++; // nn.Copy only converts the tensor type
  const headBn = expectKind(next(), 'SpatialBatchNormalization', 'the final BN', top.at);
  expectKind(next(), 'ReLU', 'the final ReLU', top.at);
  const avg = expectKind(next(), 'SpatialAveragePooling', 'the average pooling', top.at);
  notes.push(`${avg.at} (${avg.int('kW')}x${avg.int('kH')}, stride ${avg.int('dW', 1)}) is replaced by global average pooling, so any input size works`);
  const view = next();
  if (!view || (view.kind !== 'View' && view.kind !== 'Reshape')) (view ?? top).fail('expected nn.View (flattening) after the average pooling');
  const fc = expectKind(next(), 'Linear', 'the classifier', top.at);
  if (i < kids.length) kids[i].fail('unexpected module after the classifier');
  const fcW = fc.tensor('weight', true)!;
  const fcB = fc.tensor('bias', false);
  if (fcW.sizes.length !== 2 || fcW.sizes[1] !== channels) fc.fail(`weight [${fcW.sizes.join(', ')}] should be [classes, ${channels}]`);
  const classes = fcW.sizes[0];
  if (fcB && fcB.numel !== classes) fc.fail(`bias has ${count(fcB.numel, 'value')} for ${count(classes, 'class', 'classes')}`);

  // The layout: how the units pre-activate and project, the same for the whole network.
  const all = stages.flat();
  const kind = all[0].kind;
  for (const u of all) if (u.kind !== kind) u.mod.fail(`a ${u.kind} unit in a network of ${kind} units`);
  stages.forEach((units, s) => {
    if (units[0].width !== WIDTHS[s]) units[0].mod.fail(`stage ${s + 1} has width ${units[0].width}; ImageNet pre-activation ResNets use ${WIDTHS.join(', ')}`);
    units.slice(1).forEach((u) => {
      if (u.form !== 'branch') u.mod.fail('a unit after the first of its stage should start its residual branch with BN-ReLU');
      if (u.shortcut) u.mod.fail('only the first unit of a stage may project its shortcut (shortcut type C is not supported)');
    });
  });
  const firsts = stages.map((units) => units[0]);
  const firstPreact: Layout['firstPreact'] = firsts.every((u) => u.form === 'branch') ? 'branch' : 'split';
  if (firstPreact === 'split')
    firsts.forEach((u, s) => {
      const want = s === 0 && stemBn ? 'none' : 'split';
      if (u.form !== want)
        u.mod.fail(
          want === 'none'
            ? 'the first unit after the stem\'s BN-ReLU should not pre-activate again (or every first unit should pre-activate inside its branch, as in the released ResNet-200)'
            : 'a stage\'s first unit should pre-activate before the split (BN-ReLU, then ConcatTable) like the others, or all inside their branches',
        );
    });
  const projections = all.filter((u) => u.shortcut);
  for (const u of projections) if (u.inC === u.outC && u.stride === 1) u.mod.fail('projects a shortcut whose shape does not change (shortcut type C is not supported)');
  const projectionNorm = projections.length > 0 && projections[0].shortcut!.bn !== null;
  for (const u of projections) if ((u.shortcut!.bn !== null) !== projectionNorm) u.mod.fail(`projection shortcuts ${projectionNorm ? 'have' : 'lack'} a BN elsewhere in the network, but not here`);
  const convs = [stemConv, ...all.flatMap((u) => [...u.convs, ...(u.shortcut ? [u.shortcut.conv] : [])])];
  const convBias = convs.some((c) => c.bias !== null);

  const layout: Layout = { origin: 'fb.resnet.torch', stemNorm: stemBn !== null, firstPreact, projectionNorm, convBias };
  const units = stages.map((s) => s.length);
  const depth = Object.entries(IMAGENET_DEPTHS).find(([, e]) => e.unit === kind && e.units.join() === units.join())?.[0];
  const req: ModelRequest = { dataset: 'imagenet', classes, unit: kind, inChannels: stemConv.inC, layout };
  if (depth) req.depth = Number(depth);
  else req.stages = units;
  let cfg: ResNetConfig;
  try {
    cfg = resolveConfig(req);
  } catch (e) {
    throw new ImportError(`${top.at}: the network it describes is not one of the family: ${(e as Error).message}`);
  }

  const tensors = new Map<string, SourceTensor>();
  const putConv = (c: ConvInfo, name: string): void => {
    tensors.set(`${name}.weight`, { ...from(c.weight, c.mod, 'weight'), dims: [c.outC, c.inC, c.k, c.k] });
    if (c.bias) tensors.set(`${name}.bias`, from(c.bias, c.mod, 'bias'));
    else if (convBias) tensors.set(`${name}.bias`, { dims: [c.outC], values: () => new Float32Array(c.outC), from: `${c.mod.path}.bias (absent: zeros)` });
  };
  putConv(stemConv, 'stem.conv');
  if (stemBn) bnTensors(stemBn, 'stem.bn', 64, tensors);
  stages.forEach((us, s) =>
    us.forEach((u, k) => {
      const p = `stage${s + 1}.unit${k + 1}`;
      u.convs.forEach((c, ci) => {
        const bn = u.bns[ci];
        if (bn) bnTensors(bn, `${p}.bn${ci + 1}`, c.inC, tensors);
        putConv(c, `${p}.conv${ci + 1}`);
      });
      if (u.shortcut) {
        putConv(u.shortcut.conv, `${p}.shortcut`);
        if (u.shortcut.bn) bnTensors(u.shortcut.bn, `${p}.shortcut_bn`, u.outC, tensors);
      }
    }),
  );
  if (bnChannels(headBn) !== channels) headBn.fail(`normalises ${count(bnChannels(headBn), 'channel')}, but ${channels} ${channels === 1 ? 'arrives' : 'arrive'} there`);
  bnTensors(headBn, 'head.bn', channels, tensors);
  tensors.set('head.fc.weight', from(fcW, fc, 'weight'));
  tensors.set('head.fc.bias', fcB ? from(fcB, fc, 'bias') : { dims: [classes], values: () => new Float32Array(classes), from: `${fc.path}.bias (absent: zeros)` });
  return { cfg, tensors, notes };
}
