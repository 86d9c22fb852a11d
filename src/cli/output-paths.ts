// Where command outputs go by default, and checks that outputs never land on another output or an input.

import { basename, dirname, extname, join, resolve } from 'node:path';
import type { ResNetConfig } from '../models/config.js';
import { graphName } from '../models/preact.js';
import { CliError } from './common.js';

/** Where the weights of a model come from, which its default file name says. */
export type WeightsSource = { seed: number } | { weights: string };

/** Names a weights file by its stem, or by its folder when the stem is a run's generic `checkpoint` / `model`. */
export function weightsTag(path: string): string {
  const stem = basename(path, extname(path));
  const tag = ['checkpoint', 'model'].includes(stem) ? basename(dirname(resolve(path))) || stem : stem;
  return tag.replace(/[^A-Za-z0-9._-]+/g, '-');
}

/**
 * The default output path: `models/<name>-seed<N>.onnx` for random-init weights, `models/<name>-from-<tag>.onnx`
 * for weights read from a file (see weightsTag). The suffix is never empty, so a default never names a model kept
 * in models/ (those are `models/<name>.onnx`, e.g. the trained preact-resnet20-fashion-mnist.onnx).
 */
export function defaultOutput(cfg: ResNetConfig, from: WeightsSource = { seed: 0 }): string {
  const variant = cfg.activation === 'full-preact' ? '' : `-${cfg.activation}`;
  const shortcut = cfg.shortcut.kind === 'identity' ? '' : `-${cfg.shortcut.kind}`;
  const source = 'seed' in from ? `-seed${from.seed}` : `-from-${weightsTag(from.weights)}`;
  return join('models', `${graphName(cfg).replace(/_/g, '-')}${variant}${shortcut}${source}.onnx`);
}

/** Refuses two outputs on one path, or an output on an input's path (flag -> path; undefined = not given). */
export function distinctPaths(outputs: Record<string, string | undefined>, inputs: Record<string, string | undefined>): void {
  const seen = new Map<string, string>();
  for (const [flag, path] of Object.entries(inputs)) if (path !== undefined) seen.set(resolve(path), flag);
  for (const [flag, path] of Object.entries(outputs)) {
    if (path === undefined) continue;
    const other = seen.get(resolve(path));
    if (other) throw new CliError(`${flag} ${path} is the same file as ${other}; give each its own path`);
    seen.set(resolve(path), flag);
  }
}
