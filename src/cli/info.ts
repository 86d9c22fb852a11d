// `resnet-onnx info`: the layer table.

import type { Command } from 'commander';
import { defaultInputSize, describe } from '../models/config.js';
import { formatSummary, summarize } from '../models/summary.js';
import { type ModelFlags, configFrom, intArg, modelOptions } from './common.js';
import { modelFileSummary } from './model-file.js';

export function infoCommand(prog: Command): void {
  modelOptions(prog.command('info').description('print the layer table: stages, widths, parameters and MACs'))
    .option('--input-size <n>', 'input height = width for the MAC count (default 32 CIFAR, 28 MNIST-style, 224 ImageNet)', intArg('--input-size', 8))
    .option('--json', 'print JSON instead of a table')
    .option('--model <file>', 'describe a model file instead: the architecture it records, its weights and precision (int8: the quantization record)')
    .action((f: ModelFlags & { inputSize?: number; json?: boolean; model?: string }) => {
      const file = f.model === undefined ? undefined : modelFileSummary(f.model);
      const cfg = file?.cfg ?? configFrom(f);
      const size = f.inputSize ?? defaultInputSize(cfg);
      const s = summarize(cfg, size);
      if (f.json) console.log(JSON.stringify({ ...(file ? { model: file.json } : {}), config: cfg, ...s }, null, 2));
      else console.log([...(file?.lines ?? []), formatSummary(s, describe(cfg))].join('\n'));
    });
}
