// What every command shares: argument parsers, the network-choosing flags, user errors, a progress bar.

import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { MAX_OPSET, MIN_OPSET } from '../export/onnx.js';
import { ACTIVATIONS, DATASETS, type ModelRequest, type ResNetConfig, SHORTCUTS, resolveConfig } from '../models/config.js';

export function intArg(name: string, min = 1): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${v}'`);
    return n;
  };
}

/** The highest opset the CLI writes: from MIN_OPSET to it, the nodes it writes have CUDA and WebGPU kernels (README, "What runs where"). */
export const CLI_MAX_OPSET = 21;

/**
 * Opsets the ONNX writer could emit but the CLI refuses, and why (per provider, from onnxruntime 1.30's kernel
 * tables; test/kernels.test.ts checks each reason against src/export/kernels.ts).
 */
export const REFUSED_OPSETS: Readonly<Record<number, string>> = {
  22:
    "onnxruntime 1.30's CUDA provider has no kernel for MaxPool-22 or Dropout-22, and onnxruntime-web's WebGPU provider none for Conv-22, " +
    'ConvTranspose-22, GlobalAveragePool-22 or MaxPool-22, so those nodes would run on the CPU',
};

/** `--opset N`: an integer in the range the CLI writes, checked while parsing (a bad value is a parse error). */
export function opsetArg(v: string): number {
  const n = Number(v);
  const integer = /^\s*\d+\s*$/.test(v);
  if (integer && n <= MAX_OPSET && REFUSED_OPSETS[n]) throw new InvalidArgumentError(`--opset ${n} is refused: ${REFUSED_OPSETS[n]}; use ${MIN_OPSET} to ${CLI_MAX_OPSET}`);
  if (!integer || n < MIN_OPSET || n > CLI_MAX_OPSET)
    throw new InvalidArgumentError(
      `--opset must be an integer from ${MIN_OPSET} to ${CLI_MAX_OPSET} (the ops this project emits are defined alike there and have onnxruntime 1.30 CUDA and WebGPU kernels; see the README's "What runs where"), got '${v}'`,
    );
  return n;
}

export function numArg(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got '${v}'`);
    return n;
  };
}

/** A number in [min, max] (max optional); `hint` says what the value means, for the error. */
export function rangeArg(name: string, min: number, max = Infinity, hint = ''): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be a number ${max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`}${hint ? ` (${hint})` : ''}, got '${v}'`);
    return n;
  };
}

export function listArg(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1)) throw new InvalidArgumentError(`--stages must be a comma-separated list of positive integers, got '${v}'`);
  return parts.map(Number);
}

/** The flags that choose a network; shared by every command that builds one. */
export function modelOptions(cmd: Command): Command {
  return cmd
    .option('-d, --depth <n>', 'network depth; picks the family when only one has it', intArg('--depth'))
    .addOption(new Option('--dataset <name>', 'dataset the net is for (sets family, classes, channels, preprocessing)').choices([...DATASETS]))
    .option('--classes <n>', 'number of classes (default: the dataset\'s)', intArg('--classes', 2))
    .addOption(new Option('--unit <kind>', 'unit type: basic, bottleneck, or single (ResNet-110 1-layer)').choices(['basic', 'bottleneck', 'single']))
    .option('--stages <list>', 'custom units per stage instead of --depth, e.g. 3,4,6,3 (ImageNet) or 18 (CIFAR)', listArg)
    .addOption(new Option('--variant <name>', 'activation placement (paper Fig. 4 / Table 2)').choices([...ACTIVATIONS]).default('full-preact'))
    .addOption(new Option('--shortcut <name>', 'shortcut of identity units (paper Fig. 2 / Table 1)').choices([...SHORTCUTS]).default('identity'))
    .option('--scale <lambda>', 'lambda for --shortcut scaling, in [0, 1] (default 0.5; 0: no shortcut, a plain net)', numArg('--scale'))
    .option('--scale-residual', 'with --shortcut scaling: also scale F by 1 - lambda')
    .option('--gate-bias <b>', 'initial gate bias b_g for the gating shortcuts (default -6)', numArg('--gate-bias'))
    .option('--shortcut-dropout <p>', 'dropout ratio for --shortcut dropout (default 0.5)', numArg('--shortcut-dropout'))
    .addOption(new Option('--projection <type>', 'shortcut when the shape changes: A zero-pad (CIFAR basic default), B 1x1 conv').choices(['A', 'B']));
}

export interface ModelFlags {
  depth?: number;
  dataset?: ModelRequest['dataset'];
  classes?: number;
  unit?: ModelRequest['unit'];
  stages?: number[];
  variant: (typeof ACTIVATIONS)[number];
  shortcut: (typeof SHORTCUTS)[number];
  scale?: number;
  scaleResidual?: boolean;
  gateBias?: number;
  shortcutDropout?: number;
  projection?: 'A' | 'B';
}

export function configFrom(f: ModelFlags): ResNetConfig {
  const usesOption = (flag: string, given: unknown, kinds: string[]): void => {
    if (given !== undefined && !kinds.includes(f.shortcut))
      throw new CliError(`${flag} conflicts with --shortcut ${f.shortcut}: it applies to --shortcut ${kinds.join(' or ')}`);
  };
  usesOption('--scale', f.scale, ['scaling']);
  usesOption('--scale-residual', f.scaleResidual, ['scaling']);
  usesOption('--gate-bias', f.gateBias, ['exclusive-gating', 'shortcut-gating']);
  usesOption('--shortcut-dropout', f.shortcutDropout, ['dropout']);
  const shortcut: ModelRequest['shortcut'] = { kind: f.shortcut };
  if (f.scale !== undefined) shortcut.scale = f.scale;
  if (f.scaleResidual) shortcut.scaleResidual = true;
  if (f.gateBias !== undefined) shortcut.gateBias = f.gateBias;
  if (f.shortcutDropout !== undefined) shortcut.dropout = f.shortcutDropout;
  return resolveConfig({
    depth: f.depth,
    dataset: f.dataset,
    classes: f.classes,
    unit: f.unit,
    stages: f.stages,
    activation: f.variant,
    shortcut,
    projection: f.projection,
  });
}

/** A mistake in the command line; exits 2. */
export class CliError extends Error {
  override name = 'CliError';
}

/** Error classes that mean the user's request or input was wrong (exit 2) rather than a failure (exit 1). */
export const USER_ERRORS = ['ConfigError', 'CheckpointError', 'GraphError', 'DatasetError', 'MeanImageError', 'PreprocessingError', 'PathError', 'PullRequestError', 'ImportError', 'T7Error'];

/** A progress bar on stderr when it is a terminal; silent otherwise. */
export function progressBar(enabled: boolean): { update: (done: number, total: number) => void; stop: () => void } {
  if (!enabled || !process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: 'writing {bar} {percentage}% | {value}/{total} MB | ETA {eta}s', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      const mb = (n: number): number => Math.round(n / 1e6);
      if (!started) {
        bar.start(mb(total), 0);
        started = true;
      }
      bar.update(mb(done));
    },
    stop: () => started && bar.stop(),
  };
}

