// `resnet-onnx export`: write an inference ONNX model.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { exportInference } from '../export/inference.js';
import { saveWeights } from '../export/weights.js';
import { type ResNetConfig, describe } from '../models/config.js';
import { buildResNet, graphName } from '../models/preact.js';
import { CliError, type ModelFlags, configFrom, intArg, modelOptions, progressBar } from './common.js';

export function defaultOutput(cfg: ResNetConfig): string {
  const variant = cfg.activation === 'full-preact' ? '' : `-${cfg.activation}`;
  const shortcut = cfg.shortcut.kind === 'identity' ? '' : `-${cfg.shortcut.kind}`;
  return join('models', `${graphName(cfg).replace(/_/g, '-')}${variant}${shortcut}.onnx`);
}

export function exportCommand(prog: Command): void {
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

}
