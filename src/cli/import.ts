// `resnet-onnx import`: turn published weights (fb.resnet.torch .t7, timm ResNetV2 safetensors) into our ONNX.

import type { Command } from 'commander';
import { describe } from '../models/config.js';
import { type Imported, ImportError, T7Error, exportImported, importFailure, importModel } from '../import/index.js';
import { checkInputFile, checkOutputFile } from '../util/files.js';
import { CliError, opsetArg, progressBar } from './common.js';
import { defaultOutput, distinctPaths } from './output-paths.js';

export interface ImportFlags {
  output?: string;
  fold: boolean;
  opset: number;
  probabilities?: boolean;
  saveWeights?: string;
  force?: boolean;
  quiet?: boolean;
}

/** A default output path, named after the network only the read file tells, checked then; a refused one closes the file. */
export function checkImportedOutput(net: Imported, output: string, force: boolean | undefined): void {
  try {
    checkOutputFile(output, { force, createParent: true });
  } catch (e) {
    net.close();
    throw e;
  }
}

/** Reads and maps a file; a file that does not fit is a user error (exit 2) naming the module path or key. */
export function importOrExplain(path: string): Imported {
  try {
    return importModel(path);
  } catch (e) {
    if (e instanceof ImportError || e instanceof T7Error) throw new CliError(importFailure(path, e));
    throw e;
  }
}

/** Writes the ONNX model of an imported network and says what it did; shared with `export --weights`. */
export function writeImported(net: Imported, output: string, f: ImportFlags): void {
  const started = Date.now();
  const bar = progressBar(!f.quiet);
  let report;
  try {
    report = exportImported(net, { output, fold: f.fold, opset: f.opset, probabilities: f.probabilities, saveWeights: f.saveWeights, progress: bar.update });
  } catch (e) {
    if (e instanceof ImportError) throw new CliError(e.message);
    throw e;
  } finally {
    bar.stop();
    net.close();
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(describe(net.cfg));
  console.log(`source: ${net.source}`);
  for (const note of net.notes) console.log(`note: ${note}`);
  console.log(
    `wrote ${report.path}: ${(report.bytes / 1e6).toFixed(1)} MB, ${report.parameters.toLocaleString('en-US')} parameters, ${report.nodes} nodes, ${report.foldedBatchNorms} BatchNorms folded, opset ${f.opset}, weights ${report.weights} (${secs} s)`,
  );
  if (f.saveWeights) console.log(`wrote ${f.saveWeights}`);
}

export function importCommand(prog: Command): void {
  prog
    .command('import')
    .description('convert published weights to ONNX: fb.resnet.torch .t7 (e.g. resnet-200.t7) or timm ResNetV2 .safetensors; the format is read from the content')
    .argument('<file>', 'a Lua Torch .t7 model, a timm ResNetV2 safetensors state dict, or a resnet-onnx checkpoint')
    .option('-o, --output <file>', 'output path (default: models/<name>-from-<file name>.onnx)')
    .option('--no-fold', 'keep BatchNormalization nodes (default: fold into the preceding conv)')
    .option('--opset <n>', 'ONNX opset (13..21; 22 is refused, see the README); the IR version follows it', opsetArg, 17)
    .option('--probabilities', 'add a `probabilities` output (softmax of the logits)')
    .option('--save-weights <file>', 'also write the weights as a resnet-onnx checkpoint (.safetensors) that records the architecture')
    .option('--force', 'replace output files that exist (-o, --save-weights)')
    .option('-q, --quiet', 'no progress bar')
    .action((file: string, f: ImportFlags) => {
      checkInputFile(file, 'import');
      distinctPaths({ '-o': f.output, '--save-weights': f.saveWeights }, { 'the input': file });
      if (f.output) checkOutputFile(f.output, { flag: '-o', force: f.force });
      if (f.saveWeights) checkOutputFile(f.saveWeights, { flag: '--save-weights', force: f.force });
      const net = importOrExplain(file);
      // The default name says what the network is, which only the file tells.
      const output = f.output ?? defaultOutput(net.cfg, { weights: file });
      if (!f.output) checkImportedOutput(net, output, f.force);
      writeImported(net, output, f);
    });
}
