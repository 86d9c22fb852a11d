// Maps a timm ResNetV2 state dict (`resnetv2_50`, `resnetv2_101`, ...: pre-activation, BatchNorm, non-BiT) in
// safetensors onto our family. timm's names (timm/models/resnetv2.py) and ours:
//   stem.conv                           -> stem.conv (no stem BN: the max pool reads the raw conv output)
//   stages.S.blocks.B.normI / convI     -> stage{S+1}.unit{B+1}.bnI / convI (normI = BN + ReLU before convI;
//                                          an identity shortcut reads the raw block input, a projection norm1's)
//   stages.S.blocks.0.downsample.conv   -> stage{S+1}.unit1.shortcut (reads norm1's output, as in the SPEC;
//                                          basic blocks have it only where the shape changes)
//   norm                                -> head.bn
//   head.fc (1x1 conv with bias)        -> head.fc (the same map on pooled features)
// `*.num_batches_tracked` (training bookkeeping) is ignored.

import type { SafeTensorsFile } from '../export/safetensors.js';
import { IMAGENET_DEPTHS, type Layout, type ModelRequest, type ResNetConfig, type UnitKind, resolveConfig } from '../models/config.js';
import { ImportError, type SourceTensor } from './imported.js';
import { count } from './text.js';

export interface TimmMapping {
  cfg: ResNetConfig;
  tensors: Map<string, SourceTensor>;
  notes: string[];
}

const BN_LEAVES = ['weight', 'bias', 'running_mean', 'running_var'];
const WIDTHS = [64, 128, 256, 512];

/** True when the tensor names look like a timm ResNetV2 (used by format detection). */
export function looksLikeTimmResNetV2(names: readonly string[]): boolean {
  return names.some((n) => n.startsWith('stem.conv')) && names.some((n) => /^stages\.\d+\.blocks\.\d+\./.test(n));
}

export function mapTimmResNetV2(file: SafeTensorsFile, label: string): TimmMapping {
  const names = [...file.tensors.keys()];
  const has = (n: string): boolean => file.tensors.has(n);
  const notes: string[] = [];
  const fail = (m: string): never => {
    throw new ImportError(`${label}: ${m}`);
  };

  if (has('stem.conv1.weight') || has('stem.conv2.weight')) fail("key 'stem.conv1.weight': a deep stem (resnetv2_*d / *t) is not supported; only the 7x7 stem of resnetv2_50/101/152");
  if (has('stem.norm.weight')) fail("key 'stem.norm.weight': a stem with BN is timm's non-pre-activation ResNetV2 variant, not supported");
  const bitNorm = names.find((n) => /norm\d?\.weight$/.test(n) && !has(n.replace(/weight$/, 'running_mean')));
  if (bitNorm) fail(`key '${bitNorm}' has no running_mean: GroupNorm (BiT, resnetv2_*x*_bit) checkpoints are not supported, only BatchNorm ones`);
  if (!has('head.fc.weight')) fail("key 'head.fc.weight' is missing: a model without its classifier (num_classes = 0) cannot be exported");

  // Blocks per stage, from the keys; every other key must be one we know.
  const blocks: number[] = [];
  for (const n of names) {
    if (n.endsWith('.num_batches_tracked')) continue;
    const m = /^stages\.(\d+)\.blocks\.(\d+)\.(norm[123]|conv[123]|downsample\.conv)\.(weight|bias|running_mean|running_var)$/.exec(n);
    if (m) {
      const [s, b] = [Number(m[1]), Number(m[2])];
      if (s >= 4) fail(`key '${n}': an ImageNet ResNetV2 has 4 stages (0..3)`);
      blocks[s] = Math.max(blocks[s] ?? 0, b + 1);
      continue;
    }
    if (/^(stem\.conv\.weight|head\.fc\.(weight|bias)|norm\.(weight|bias|running_mean|running_var))$/.test(n)) continue;
    fail(`key '${n}' is not part of a timm ResNetV2 (resnetv2_50/101/152, BatchNorm)`);
  }
  if (blocks.length === 0) fail('no stages.S.blocks.B keys');
  for (let s = 0; s < blocks.length; s++) if (!blocks[s]) fail(`stage ${s} has no blocks (keys stages.${s}.blocks.*)`);
  const ignored = names.filter((n) => n.endsWith('.num_batches_tracked'));
  if (ignored.length) notes.push(`${ignored.length} num_batches_tracked tensors ignored (training bookkeeping)`);

  const kind: UnitKind = has('stages.0.blocks.0.conv3.weight') ? 'bottleneck' : 'basic';
  const shape = (n: string): readonly number[] => file.tensors.get(n)?.shape ?? fail(`key '${n}' is missing`);
  blocks.forEach((_, s) => {
    const w = shape(`stages.${s}.blocks.0.conv1.weight`)[0];
    if (w !== WIDTHS[s]) fail(`key 'stages.${s}.blocks.0.conv1.weight' has ${count(w, 'output channel')}; stage ${s} of an ImageNet ResNetV2 has width ${WIDTHS[s]}`);
  });
  const fcShape = shape('head.fc.weight');
  if (!(fcShape.length === 2 || (fcShape.length === 4 && fcShape[2] === 1 && fcShape[3] === 1))) fail(`key 'head.fc.weight' is [${fcShape.join(', ')}]; a 1x1 conv or linear classifier is expected`);
  const classes = fcShape[0];

  const layout: Layout = { origin: 'timm', stemNorm: false, firstPreact: 'split-if-projecting', projectionNorm: false, convBias: false };
  const depth = Object.entries(IMAGENET_DEPTHS).find(([, e]) => e.unit === kind && e.units.join() === blocks.join())?.[0];
  const req: ModelRequest = { dataset: 'imagenet', classes, unit: kind, inChannels: shape('stem.conv.weight')[1], layout };
  if (depth) req.depth = Number(depth);
  else req.stages = blocks;
  let cfg: ResNetConfig;
  try {
    cfg = resolveConfig(req);
  } catch (e) {
    throw new ImportError(`${label}: the network it describes is not one of the family: ${(e as Error).message}`);
  }

  // Our names -> timm keys, for every tensor the network has.
  const tensors = new Map<string, SourceTensor>();
  const used = new Set<string>();
  const put = (ours: string, key: string, dims?: number[]): void => {
    const e = file.tensors.get(key) ?? fail(`key '${key}' is missing (needed for '${ours}')`);
    used.add(key);
    tensors.set(ours, { dims: dims ?? [...e.shape], values: () => file.readFloat32(key), from: `${label}: key '${key}'` });
  };
  const putBn = (ours: string, key: string): void => BN_LEAVES.forEach((leaf) => put(`${ours}.${leaf}`, `${key}.${leaf}`));
  put('stem.conv.weight', 'stem.conv.weight');
  const convs = kind === 'bottleneck' ? 3 : 2;
  blocks.forEach((n, s) => {
    for (let b = 0; b < n; b++) {
      const ours = `stage${s + 1}.unit${b + 1}`;
      const key = `stages.${s}.blocks.${b}`;
      for (let i = 1; i <= convs; i++) {
        putBn(`${ours}.bn${i}`, `${key}.norm${i}`);
        put(`${ours}.conv${i}.weight`, `${key}.conv${i}.weight`);
      }
      // timm projects in a stage's first block where the shape changes (a bottleneck's always does).
      if (b === 0 && (s > 0 || kind === 'bottleneck')) put(`${ours}.shortcut.weight`, `${key}.downsample.conv.weight`);
      else if (has(`${key}.downsample.conv.weight`)) fail(`key '${key}.downsample.conv.weight': a projection where the shape does not change is not part of timm's ResNetV2`);
    }
  });
  putBn('head.bn', 'norm');
  put('head.fc.weight', 'head.fc.weight', [classes, fcShape[1]]);
  put('head.fc.bias', 'head.fc.bias');
  for (const n of names) {
    if (n.endsWith('.num_batches_tracked')) continue;
    if (!used.has(n)) fail(`key '${n}' has no place in a ${kind} ResNetV2 with blocks [${blocks.join(', ')}]`);
  }
  return { cfg, tensors, notes };
}
