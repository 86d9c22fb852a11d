// `resnet-onnx export`: write an inference ONNX model.

import { type Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_SGD, exportTrainingAsync, trainingStatePath } from '../export/training.js';
import type { BuildTarget } from '../graph/builder.js';
import { detectFormat } from '../import/index.js';
import { exportInferenceAsync } from '../export/inference.js';
import { saveWeightsAsync } from '../export/weights.js';
import { describe } from '../models/config.js';
import { buildResNet } from '../models/preact.js';
import { checkInputFile, checkOutputFile } from '../util/files.js';
import { CliError, type ModelFlags, configFrom, intArg, modelOptions, opsetArg, progressBar, rangeArg } from './common.js';
import { checkInt8Flags, finishInt8, floatStaging, int8Default } from './export-int8.js';
import { type ImportFlags, checkImportedOutput, importOrExplain, writeImported } from './import.js';
import { defaultOutput, distinctPaths } from './output-paths.js';

export { defaultOutput } from './output-paths.js';

/** The flags that choose an architecture; without them, `--weights` takes it from the file. */
const ARCHITECTURE_FLAGS = ['depth', 'dataset', 'classes', 'unit', 'stages', 'variant', 'shortcut', 'scale', 'scaleResidual', 'gateBias', 'shortcutDropout', 'projection'];

function architectureGiven(cmd: Command): string | undefined {
  return ARCHITECTURE_FLAGS.find((k) => {
    const source = cmd.getOptionValueSource(k);
    return source !== undefined && source !== 'default';
  });
}

/** `import`'s flags (output, folding, opset, probabilities, --save-weights, --force, --quiet) and export's own. */
interface ExportFlags extends ImportFlags {
  seed: number;
  weights?: string;
  int8?: boolean;
  calibrate?: string;
  calibrationImages?: number;
}

interface TrainingFlags {
  training?: boolean;
  batch: number;
  inputSize?: number;
  /** Deprecated spelling of --input-size (hidden). */
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

async function exportTrainingStep(f: ModelFlags & ExportFlags & TrainingFlags, cmd: Command): Promise<void> {
  const inferenceOnly = (['weights', 'saveWeights', 'probabilities'] as const).find((k) => cmd.getOptionValueSource(k) === 'cli');
  if (inferenceOnly) throw new CliError(`--${kebab(inferenceOnly)} conflicts with --training (the training graph starts from --seed's initial weights)`);
  if (cmd.getOptionValueSource('fold') === 'cli') throw new CliError('--no-fold conflicts with --training (training graphs never fold BatchNorm)');
  if (f.size !== undefined && f.inputSize !== undefined) throw new CliError('--size is the old spelling of --input-size; give only --input-size');
  if (f.size !== undefined) console.error('note: --size is deprecated; use --input-size');
  const cfg = configFrom(f);
  const size = f.inputSize ?? f.size ?? (cfg.family === 'imagenet' ? 224 : cfg.inChannels === 1 ? 28 : 32);
  const output = f.output ?? defaultOutput(cfg, { seed: f.seed }).replace(/\.onnx$/, `-train-b${f.batch}.onnx`);
  // Two outputs: the graph and its initial state beside it; both are checked before any work.
  checkOutputFile(output, { flag: f.output ? '-o' : undefined, force: f.force, createParent: !f.output });
  checkOutputFile(trainingStatePath(output), { flag: f.output ? `-o ${output}: its state file` : undefined, force: f.force });
  const bar = progressBar(!f.quiet);
  let r;
  try {
    r = await exportTrainingAsync(cfg, { output, batch: f.batch, size, seed: f.seed, opset: f.opset, target: f.target, sgd: { momentum: f.momentum, weightDecay: f.weightDecay, nesterov: f.nesterov ?? false, decayOn: f.decayOn }, progress: bar.update });
  } finally {
    bar.stop();
  }
  console.log(`${describe(cfg)}: training step, batch ${f.batch}, ${size}x${size}`);
  console.log(`wrote ${output}: ${(r.bytes / 1e6).toFixed(1)} MB, ${r.nodes} nodes, opset ${f.opset}; ${r.state} state inputs X with outputs X#next`);
  console.log(`wrote ${r.statePath}: ${(r.stateBytes / 1e6).toFixed(1)} MB, the initial state (tensor names = input names): feed it with input, labels and lr, then each X#next back as X`);
}

/** SGD momentum: [0, 1) (1 never forgets a gradient and diverges). */
function momentumArg(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n >= 1) throw new InvalidArgumentError(`--momentum must be a number in [0, 1) (0 = plain SGD, 0.9 the paper's), got '${v}'`);
  return n;
}

export function exportCommand(prog: Command): void {
  modelOptions(prog.command('export').description('write an inference ONNX model of a pre-activation ResNet'))
    .option('-o, --output <file>', 'output path (default: models/<name>-seed<N>.onnx, or models/<name>-from-<weights>.onnx with --weights)')
    .option('--seed <n>', 'seed for the initial weights', intArg('--seed', 0), 0)
    .option('--weights <file>', 'load weights: a checkpoint written by this project (.safetensors; without architecture flags, the architecture it records), or a file `import` reads (.t7, timm safetensors)')
    .option('--no-fold', 'keep BatchNormalization nodes as defined (default: fold into the preceding conv)')
    .option('--opset <n>', 'ONNX opset (13..21; 22 is refused, see the README); the IR version follows it', opsetArg, 17)
    .option('--probabilities', 'add a `probabilities` output (softmax of the logits)')
    .option('--save-weights <file>', 'also write the weights used as a .safetensors checkpoint')
    .option('--force', 'replace output files that exist (-o, --save-weights, the state file of --training)')
    .option('-q, --quiet', 'no progress bar')
    .option('--int8', 'write a calibrated int8 (QDQ) model instead of the float one (as `resnet-onnx quantize`; needs --calibrate)')
    .option('--calibrate <data>', 'with --int8: calibration images (a folder of images, or a dataset folder: IDX, CIFAR)')
    .option('--calibration-images <n>', 'with --int8: images sampled for calibration (default 256)', intArg('--calibration-images'))
    .option('--training', 'write the training-step graph (forward, loss, backward, SGD) instead of the inference graph, and its initial state beside it (<output>.state.safetensors, in place of .onnx)')
    .option('--batch <n>', 'with --training: batch size of the step', intArg('--batch'), 128)
    .option('--input-size <n>', 'with --training: input height = width (default 32 CIFAR, 28 MNIST-style, 224 ImageNet)', intArg('--input-size', 8))
    .addOption(new Option('--size <n>', 'deprecated: --input-size').argParser(intArg('--size', 8)).hideHelp())
    .option('--momentum <mu>', 'with --training: SGD momentum, in [0, 1)', momentumArg, DEFAULT_SGD.momentum)
    .option('--weight-decay <wd>', 'with --training: weight decay, >= 0', rangeArg('--weight-decay', 0), DEFAULT_SGD.weightDecay)
    .option('--nesterov', 'with --training: Nesterov momentum')
    .addOption(new Option('--decay-on <which>', 'with --training: weight decay on all learned tensors or conv/FC weights only').choices(['all', 'weights']).default('all'))
    .addOption(
      new Option('--target <runtime>', "with --training: what runs the step; onnxruntime-cpu computes BN statistics with training-mode BatchNormalization (faster there, rejected by onnxruntime's CUDA/ROCm providers)")
        .choices(['any', 'onnxruntime-cpu'])
        .default('any'),
    )
    .action(async (f: ModelFlags & ExportFlags & TrainingFlags, cmd: Command) => {
      checkInt8Flags(f, cmd);
      if (f.training) return exportTrainingStep(f, cmd);
      const onlyTraining = (['batch', 'inputSize', 'size', 'momentum', 'weightDecay', 'nesterov', 'decayOn', 'target'] as const).find((k) => cmd.getOptionValueSource(k) === 'cli');
      if (onlyTraining) throw new CliError(`--${kebab(onlyTraining)} applies to --training exports only`);
      if (f.weights && f.saveWeights) throw new CliError('--weights and --save-weights conflict: the checkpoint already exists; copy it instead');
      if (f.weights) checkInputFile(f.weights, '--weights');
      // A path the user typed is checked before the file is read; a default one is named after what it holds.
      distinctPaths({ '-o': f.output, '--save-weights': f.saveWeights }, { '--weights': f.weights });
      if (f.output) checkOutputFile(f.output, { flag: '-o', force: f.force });
      if (f.saveWeights) checkOutputFile(f.saveWeights, { flag: '--save-weights', force: f.force });
      const flag = architectureGiven(cmd);
      if (f.weights && flag === undefined) {
        // The architecture comes from the file: a checkpoint's recorded config, or an imported format's structure.
        const net = importOrExplain(f.weights);
        const output = f.output ?? int8Default(defaultOutput(net.cfg, { weights: f.weights }), f);
        if (!f.output) checkImportedOutput(net, output, f.force);
        writeImported(net, floatStaging(output, f), f);
        if (f.int8) await finishInt8(floatStaging(output, f), output, f);
        return;
      }
      if (f.weights) {
        let format: string | undefined;
        try {
          format = detectFormat(f.weights);
        } catch {
          format = undefined; // not ours to judge here: loading it reports what is wrong
        }
        if (format === 't7' || format === 'timm-safetensors')
          throw new CliError(`--${kebab(flag ?? '')} conflicts with --weights ${f.weights}: the architecture of a ${format === 't7' ? '.t7 model' : 'timm state dict'} comes from the file; drop the architecture flags`);
      }
      const cfg = configFrom(f);
      const output = f.output ?? int8Default(defaultOutput(cfg, f.weights ? { weights: f.weights } : { seed: f.seed }), f);
      if (!f.output) checkOutputFile(output, { force: f.force, createParent: true });
      const started = Date.now();
      const bar = progressBar(!f.quiet);
      let report;
      try {
        report = await exportInferenceAsync(cfg, { output: floatStaging(output, f), seed: f.seed, weights: f.weights, fold: f.fold, opset: f.opset, probabilities: f.probabilities, progress: bar.update });
      } finally {
        bar.stop();
      }
      // Its own `weights` record, so that `export --weights` of it still says these are random-init weights.
      if (f.saveWeights) await saveWeightsAsync(buildResNet(cfg, { seed: f.seed }), f.saveWeights, { config: JSON.stringify(cfg), weights: report.weights });
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      console.log(`${describe(cfg)}`);
      if (f.int8) await finishInt8(report.path, output, f);
      else console.log(`wrote ${report.path}: ${(report.bytes / 1e6).toFixed(1)} MB, ${report.parameters.toLocaleString('en-US')} parameters, ${report.nodes} nodes, ${report.foldedBatchNorms} BatchNorms folded, opset ${f.opset}, weights ${report.weights} (${secs} s)`);
      if (f.saveWeights) console.log(`wrote ${f.saveWeights}`);
    });
}
