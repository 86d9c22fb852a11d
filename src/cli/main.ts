// Command-line entry point: parses arguments and calls the library; no model logic lives here.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { exportInference } from '../export/inference.js';
import { saveWeights } from '../export/weights.js';
import { buildResNet } from '../models/preact.js';
import { ACTIVATIONS, type ModelRequest, type ResNetConfig, SHORTCUTS, describe, resolveConfig } from '../models/config.js';
import { formatSummary, summarize } from '../models/summary.js';
import { packageVersion } from '../util/paths.js';
import { graphName } from '../models/preact.js';

function intArg(name: string, min = 1): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${v}'`);
    return n;
  };
}

function numArg(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got '${v}'`);
    return n;
  };
}

function listArg(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1)) throw new InvalidArgumentError(`--stages must be a comma-separated list of positive integers, got '${v}'`);
  return parts.map(Number);
}

/** The flags that choose a network; shared by every command that builds one. */
function modelOptions(cmd: Command): Command {
  return cmd
    .option('-d, --depth <n>', 'network depth; picks the family when only one has it', intArg('--depth'))
    .addOption(new Option('--dataset <name>', 'dataset the net is for (sets family, classes, preprocessing)').choices(['cifar10', 'cifar100', 'imagenet']))
    .option('--classes <n>', 'number of classes (default: the dataset\'s)', intArg('--classes', 2))
    .addOption(new Option('--unit <kind>', 'unit type: basic, bottleneck, or single (ResNet-110 1-layer)').choices(['basic', 'bottleneck', 'single']))
    .option('--stages <list>', 'custom units per stage instead of --depth, e.g. 3,4,6,3 (ImageNet) or 18 (CIFAR)', listArg)
    .addOption(new Option('--variant <name>', 'activation placement (paper Fig. 4 / Table 2)').choices([...ACTIVATIONS]).default('full-preact'))
    .addOption(new Option('--shortcut <name>', 'shortcut of identity units (paper Fig. 2 / Table 1)').choices([...SHORTCUTS]).default('identity'))
    .option('--scale <lambda>', 'lambda for --shortcut scaling (default 0.5)', numArg('--scale'))
    .option('--scale-residual', 'with --shortcut scaling: also scale F by 1 - lambda')
    .option('--gate-bias <b>', 'initial gate bias b_g for the gating shortcuts (default -6)', numArg('--gate-bias'))
    .option('--shortcut-dropout <p>', 'dropout ratio for --shortcut dropout (default 0.5)', numArg('--shortcut-dropout'))
    .addOption(new Option('--projection <type>', 'shortcut when the shape changes: A zero-pad (CIFAR basic default), B 1x1 conv').choices(['A', 'B']));
}

interface ModelFlags {
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

function configFrom(f: ModelFlags): ResNetConfig {
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

class CliError extends Error {
  override name = 'CliError';
}

const USER_ERRORS = ['ConfigError', 'CheckpointError', 'GraphError'];

function defaultOutput(cfg: ResNetConfig): string {
  const variant = cfg.activation === 'full-preact' ? '' : `-${cfg.activation}`;
  const shortcut = cfg.shortcut.kind === 'identity' ? '' : `-${cfg.shortcut.kind}`;
  return join('models', `${graphName(cfg).replace(/_/g, '-')}${variant}${shortcut}.onnx`);
}

function progressBar(enabled: boolean): { update: (done: number, total: number) => void; stop: () => void } {
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

export function program(): Command {
  const prog = new Command('resnet-onnx')
    .description('Pre-activation ResNets (He et al. 2016) as ONNX: export, inspect')
    .version(packageVersion())
    .showHelpAfterError('(run with --help for usage)');

  modelOptions(prog.command('export').description('write an inference ONNX model of a pre-activation ResNet'))
    .option('-o, --output <file>', 'output path (default: models/<name>.onnx)')
    .option('--seed <n>', 'seed for the initial weights', intArg('--seed', 0), 0)
    .option('--weights <file>', 'load weights from a checkpoint written by this project (.safetensors)')
    .option('--no-fold', 'keep BatchNormalization nodes as defined (default: fold into the preceding conv)')
    .option('--opset <n>', 'ONNX opset (13..22); the IR version follows it', intArg('--opset'), 17)
    .option('--probabilities', 'add a `probabilities` output (softmax of the logits)')
    .option('--save-weights <file>', 'also write the weights used as a .safetensors checkpoint')
    .option('-q, --quiet', 'no progress bar')
    .action((f: ModelFlags & { output?: string; seed: number; weights?: string; fold: boolean; opset: number; probabilities?: boolean; saveWeights?: string; quiet?: boolean }) => {
      const cfg = configFrom(f);
      if (f.weights && f.saveWeights) throw new CliError('--weights and --save-weights conflict: the checkpoint already exists; copy it instead');
      const output = f.output ?? defaultOutput(cfg);
      // Only the default folder is created; a user's -o path must point into an existing directory.
      if (!f.output) mkdirSync(dirname(output), { recursive: true });
      else if (!existsSync(dirname(output) || '.')) throw new CliError(`cannot write ${output}: directory ${dirname(output)} does not exist`);
      const started = Date.now();
      const bar = progressBar(!f.quiet);
      let report;
      try {
        report = exportInference(cfg, { output, seed: f.seed, weights: f.weights, fold: f.fold, opset: f.opset, probabilities: f.probabilities, progress: bar.update });
      } finally {
        bar.stop();
      }
      if (f.saveWeights) saveWeights(buildResNet(cfg, { seed: f.seed }), f.saveWeights, { config: JSON.stringify(cfg) });
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      console.log(`${describe(cfg)}`);
      console.log(`wrote ${report.path}: ${(report.bytes / 1e6).toFixed(1)} MB, ${report.parameters.toLocaleString('en-US')} parameters, ${report.nodes} nodes, ${report.foldedBatchNorms} BatchNorms folded, opset ${f.opset}, weights ${report.weights} (${secs} s)`);
      if (f.saveWeights) console.log(`wrote ${f.saveWeights}`);
    });

  modelOptions(prog.command('info').description('print the layer table: stages, widths, parameters and MACs'))
    .option('--input-size <n>', 'input height = width for the MAC count (default 32 CIFAR, 224 ImageNet)', intArg('--input-size', 8))
    .option('--json', 'print JSON instead of a table')
    .action((f: ModelFlags & { inputSize?: number; json?: boolean }) => {
      const cfg = configFrom(f);
      const size = f.inputSize ?? (cfg.family === 'imagenet' ? 224 : 32);
      const s = summarize(cfg, size);
      if (f.json) console.log(JSON.stringify({ config: cfg, ...s }, null, 2));
      else console.log(formatSummary(s, describe(cfg)));
    });
  return prog;
}

export async function main(argv: string[]): Promise<number> {
  const prog = program().exitOverride();
  try {
    await prog.parseAsync(argv);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string; exitCode?: number };
    if (err.code?.startsWith('commander.')) return err.exitCode ?? 2; // commander already printed it
    console.error(`error: ${err.message}`);
    // Usage and input mistakes exit 2; anything else (I/O, internal) exits 1.
    return err instanceof CliError || USER_ERRORS.includes(err.name) ? 2 : 1;
  }
}
