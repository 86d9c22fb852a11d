// `resnet-onnx export`: write an inference ONNX model.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Command, Option } from 'commander';
import { DEFAULT_SGD, exportTraining } from '../export/training.js';
import type { BuildTarget } from '../graph/builder.js';
import { detectFormat } from '../import/index.js';
import { exportInference } from '../export/inference.js';
import { saveWeights } from '../export/weights.js';
import { type ResNetConfig, describe } from '../models/config.js';
import { buildResNet, graphName } from '../models/preact.js';
import { CliError, type ModelFlags, configFrom, intArg, modelOptions, numArg, progressBar } from './common.js';
import { checkOutputDir, importOrExplain, writeImported } from './import.js';

/** The flags that choose an architecture; without them, `--weights` takes it from the file. */
const ARCHITECTURE_FLAGS = ['depth', 'dataset', 'classes', 'unit', 'stages', 'variant', 'shortcut', 'scale', 'scaleResidual', 'gateBias', 'shortcutDropout', 'projection'];

function architectureGiven(cmd: Command): string | undefined {
  return ARCHITECTURE_FLAGS.find((k) => {
    const source = cmd.getOptionValueSource(k);
    return source !== undefined && source !== 'default';
  });
}

interface ExportFlags {
  output?: string;
  seed: number;
  weights?: string;
  fold: boolean;
  opset: number;
  probabilities?: boolean;
  saveWeights?: string;
  quiet?: boolean;
}

interface TrainingFlags {
  training?: boolean;
  batch: number;
  size?: number;
  momentum: number;
  weightDecay: number;
  nesterov?: boolean;
  decayOn: 'all' | 'weights';
  target: BuildTarget;
}

function kebab(flag: string): string {
  return flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function exportTrainingStep(f: ModelFlags & ExportFlags & TrainingFlags, cmd: Command): void {
  const inferenceOnly = (['weights', 'saveWeights', 'probabilities'] as const).find((k) => cmd.getOptionValueSource(k) === 'cli');
  if (inferenceOnly) throw new CliError(`--${kebab(inferenceOnly)} conflicts with --training (the training graph starts from --seed's initial weights)`);
  if (cmd.getOptionValueSource('fold') === 'cli') throw new CliError('--no-fold conflicts with --training (training graphs never fold BatchNorm)');
  const cfg = configFrom(f);
  const size = f.size ?? (cfg.family === 'imagenet' ? 224 : cfg.inChannels === 1 ? 28 : 32);
  const output = f.output ?? defaultOutput(cfg).replace(/\.onnx$/, `-train-b${f.batch}.onnx`);
  if (!f.output) mkdirSync(dirname(output), { recursive: true });
  else if (!existsSync(dirname(output) || '.')) throw new CliError(`cannot write ${output}: directory ${dirname(output)} does not exist`);
  const bar = progressBar(!f.quiet);
  let r;
  try {
    r = exportTraining(cfg, { output, batch: f.batch, size, seed: f.seed, opset: f.opset, target: f.target, sgd: { momentum: f.momentum, weightDecay: f.weightDecay, nesterov: f.nesterov ?? false, decayOn: f.decayOn }, progress: bar.update });
  } finally {
    bar.stop();
  }
  console.log(`${describe(cfg)}: training step, batch ${f.batch}, ${size}x${size}`);
  console.log(`wrote ${output}: ${(r.bytes / 1e6).toFixed(1)} MB, ${r.nodes} nodes, ${r.state} state tensors (inputs X with outputs X#next)`);
}

export function defaultOutput(cfg: ResNetConfig): string {
  const variant = cfg.activation === 'full-preact' ? '' : `-${cfg.activation}`;
  const shortcut = cfg.shortcut.kind === 'identity' ? '' : `-${cfg.shortcut.kind}`;
  return join('models', `${graphName(cfg).replace(/_/g, '-')}${variant}${shortcut}.onnx`);
}

export function exportCommand(prog: Command): void {
  modelOptions(prog.command('export').description('write an inference ONNX model of a pre-activation ResNet'))
    .option('-o, --output <file>', 'output path (default: models/<name>.onnx)')
    .option('--seed <n>', 'seed for the initial weights', intArg('--seed', 0), 0)
    .option('--weights <file>', 'load weights: a checkpoint written by this project (.safetensors; without architecture flags, the architecture it records), or a file `import` reads (.t7, timm safetensors)')
    .option('--no-fold', 'keep BatchNormalization nodes as defined (default: fold into the preceding conv)')
    .option('--opset <n>', 'ONNX opset (13..22); the IR version follows it', intArg('--opset'), 17)
    .option('--probabilities', 'add a `probabilities` output (softmax of the logits)')
    .option('--save-weights <file>', 'also write the weights used as a .safetensors checkpoint')
    .option('-q, --quiet', 'no progress bar')
    .option('--training', 'write the training-step graph (forward, loss, backward, SGD) instead of the inference graph')
    .option('--batch <n>', 'with --training: batch size of the step', intArg('--batch'), 128)
    .option('--size <n>', 'with --training: input height = width (default 32 CIFAR, 28 MNIST-style, 224 ImageNet)', intArg('--size', 8))
    .option('--momentum <mu>', 'with --training: SGD momentum', numArg('--momentum'), DEFAULT_SGD.momentum)
    .option('--weight-decay <wd>', 'with --training: weight decay', numArg('--weight-decay'), DEFAULT_SGD.weightDecay)
    .option('--nesterov', 'with --training: Nesterov momentum')
    .addOption(new Option('--decay-on <which>', 'with --training: weight decay on all learned tensors or conv/FC weights only').choices(['all', 'weights']).default('all'))
    .addOption(
      new Option('--target <runtime>', "with --training: what runs the step; onnxruntime-cpu computes BN statistics with training-mode BatchNormalization (faster there, rejected by onnxruntime's CUDA/ROCm providers)")
        .choices(['any', 'onnxruntime-cpu'])
        .default('any'),
    )
    .action((f: ModelFlags & ExportFlags & TrainingFlags, cmd: Command) => {
      if (f.training) return exportTrainingStep(f, cmd);
      const onlyTraining = (['batch', 'size', 'momentum', 'weightDecay', 'nesterov', 'decayOn', 'target'] as const).find((k) => cmd.getOptionValueSource(k) === 'cli');
      if (onlyTraining) throw new CliError(`--${kebab(onlyTraining)} applies to --training exports only`);
      if (f.weights && f.saveWeights) throw new CliError('--weights and --save-weights conflict: the checkpoint already exists; copy it instead');
      const flag = architectureGiven(cmd);
      if (f.weights && flag === undefined) {
        // The architecture comes from the file: a checkpoint's recorded config, or an imported format's structure.
        const net = importOrExplain(f.weights);
        const output = f.output ?? defaultOutput(net.cfg);
        checkOutputDir(output, f.output !== undefined);
        writeImported(net, output, f);
        return;
      }
      if (f.weights && existsSync(f.weights)) {
        let format: string | undefined;
        try {
          format = detectFormat(f.weights);
        } catch {
          format = undefined; // not ours to judge here: loading it reports what is wrong
        }
        if (format === 't7' || format === 'timm-safetensors')
          throw new CliError(`--${(flag ?? '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} conflicts with --weights ${f.weights}: the architecture of a ${format === 't7' ? '.t7 model' : 'timm state dict'} comes from the file; drop the architecture flags`);
      }
      const cfg = configFrom(f);
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

}
