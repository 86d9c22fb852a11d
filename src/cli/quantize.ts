// `resnet-onnx quantize`: a float model -> a calibrated QDQ int8 model (u8 activations, s8 per-channel weights).

import { type Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { basename, dirname, extname, join } from 'node:path';
import { type QuantizeOptions, type QuantizeResult, DEFAULT_IMAGES, QuantizeError, describeMethod, quantizeModel } from '../quantize/index.js';
import type { LayerSqnr } from '../quantize/calibrate.js';
import type { Method } from '../quantize/params.js';
import { DATASET_KINDS, type DatasetKind, type Split } from '../train/datasets.js';
import { checkInputFile, checkOutputFile } from '../util/files.js';
import { CliError, intArg, rangeArg } from './common.js';
import { distinctPaths } from './output-paths.js';

interface QuantizeFlags {
  calibrate?: string;
  output?: string;
  force?: boolean;
  calibrationImages: number;
  seed: number;
  method: 'minmax' | 'percentile';
  percentile?: number;
  dataset?: DatasetKind;
  split: Split;
  weightBits: '7' | '8';
  residual: 'int8' | 'float';
  preact: 'int8' | 'float';
  fc: 'int8' | 'float';
  report?: boolean;
  threads?: number;
  batch?: number;
  json?: boolean;
  quiet?: boolean;
}

/** The default output: `<model>-int8.onnx` beside the model. */
export function defaultQuantizedPath(model: string): string {
  return join(dirname(model), `${basename(model, extname(model))}-int8.onnx`);
}

function progress(enabled: boolean): { update: (phase: string, done: number, total: number) => void; stop: () => void } {
  if (!enabled || !process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar({ stream: process.stderr, format: '{phase} {bar} {percentage}% | {value}/{total} images | ETA {eta}s', hideCursor: true }, cliProgress.Presets.shades_classic);
  let phase = '';
  return {
    update(p, done, total) {
      if (p !== phase) {
        if (phase) bar.stop();
        phase = p;
        bar.start(total, 0, { phase: p === 'calibrate' ? 'calibrating' : 'report     ' });
      }
      bar.update(done);
    },
    stop: () => phase !== '' && bar.stop(),
  };
}

const fmtDb = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : 'inf');

/** The SQNR table, worst first. */
export function sqnrTable(rows: readonly LayerSqnr[]): string[] {
  const width = Math.max(5, ...rows.map((r) => r.conv.length));
  const lines = [`${'layer'.padEnd(width)}  SQNR dB  own dB  scale        zero point`, `${'-'.repeat(width)}  -------  ------  -----------  ----------`];
  for (const r of rows) lines.push(`${r.conv.padEnd(width)}  ${fmtDb(r.sqnr).padStart(7)}  ${fmtDb(r.ownSqnr).padStart(6)}  ${r.params.scale.toExponential(4).padEnd(11)}  ${String(r.params.zeroPoint).padStart(10)}`);
  return lines;
}

function jsonResult(r: QuantizeResult): object {
  return {
    output: r.output,
    bytes: r.bytes,
    floatBytes: r.floatBytes,
    sizeRatio: Number((r.bytes / r.floatBytes).toFixed(4)),
    quantization: r.record,
    convs: r.convs,
    depthwise: r.depthwise,
    gemms: r.gemms,
    values: r.values,
    skipped: r.skipped,
    ...(r.sqnr ? { sqnr: r.sqnr.map((l) => ({ layer: l.conv, value: l.value, sqnrDb: Number.isFinite(l.sqnr) ? Number(l.sqnr.toFixed(2)) : null, ownSqnrDb: Number.isFinite(l.ownSqnr) ? Number(l.ownSqnr.toFixed(2)) : null, scale: l.params.scale, zeroPoint: l.params.zeroPoint })) } : {}),
    seconds: Number(r.seconds.toFixed(3)),
  };
}

function percentileArg(v: string): number {
  return rangeArg('--percentile', 50, 100, 'the share of values the u8 range covers, e.g. 99.99')(v);
}

function weightBitsArg(v: string): '7' | '8' {
  if (v !== '7' && v !== '8') throw new InvalidArgumentError(`--weight-bits must be 7 or 8, got '${v}'`);
  return v;
}

export function quantizeCommand(prog: Command): void {
  prog
    .command('quantize')
    .description('write a calibrated int8 (QDQ) model: u8 activations, per-channel s8 weights, int32 biases')
    .argument('<model>', 'float ONNX model written by this project (export, import, pull, train)')
    .option('--calibrate <data>', 'calibration images: a folder of images (searched recursively) or a dataset folder as train reads it (IDX, CIFAR; its train split)')
    .option('-o, --output <file>', 'output path (default: <model>-int8.onnx beside the model)')
    .option('--force', 'replace the output file if it exists')
    .option('--calibration-images <n>', 'images sampled for calibration', intArg('--calibration-images'), DEFAULT_IMAGES)
    .option('--seed <n>', 'seed of the sample of calibration images', intArg('--seed', 0), 0)
    .addOption(new Option('--method <name>', 'activation ranges: minmax, or the percentile of the values (see --percentile)').choices(['minmax', 'percentile']).default('percentile'))
    .option('--percentile <p>', 'with --method percentile: the share (%) of values each u8 range covers (default 99.99)', percentileArg)
    .addOption(new Option('--dataset <name>', 'how to read --calibrate (default: told from its contents)').choices([...DATASET_KINDS]))
    .addOption(new Option('--split <name>', 'which split of a dataset to calibrate on').choices(['train', 'test']).default('train'))
    .option('--weight-bits <n>', '7: s8 weights in [-64, 64], which onnxruntime computes exactly on any x86 CPU; 8: [-127, 127], only for CPUs with AVX-512 VNNI / AVX-VNNI, or ARM', weightBitsArg, '7')
    .addOption(new Option('--residual <kind>', 'residual additions: int8 (QLinearAdd, u8 stream) or float').choices(['int8', 'float']).default('int8'))
    .addOption(new Option('--preact <kind>', "unit-opening BatchNorm: int8 (a depthwise 1x1 conv) or float (BatchNormalization)").choices(['int8', 'float']).default('int8'))
    .addOption(new Option('--fc <kind>', 'the classifier: int8 (s8 weights, u8 input, float logits) or float').choices(['int8', 'float']).default('int8'))
    .option('--report', 'also print the per-layer SQNR (dB) of each conv output on the calibration images, worst first')
    .option('--threads <n>', 'onnxruntime threads (default: all cores)', intArg('--threads'))
    .option('--batch <n>', 'images per calibration run (default 64 for crops up to 64 pixels, else 1)', intArg('--batch'))
    .option('--json', 'print one JSON object on stdout')
    .option('-q, --quiet', 'no progress bar')
    .action(async (model: string, f: QuantizeFlags) => {
      if (f.calibrate === undefined) throw new CliError('--calibrate DATA is required: a folder of images, or a dataset folder (IDX, CIFAR), to measure activation ranges on (e.g. --calibrate /usr/share/datasets/fashion-mnist)');
      if (f.percentile !== undefined && f.method !== 'percentile') throw new CliError(`--percentile applies to --method percentile, not --method ${f.method}`);
      checkInputFile(model, 'MODEL');
      const output = f.output ?? defaultQuantizedPath(model);
      distinctPaths({ [f.output ? '-o' : 'the default output']: output }, { MODEL: model });
      checkOutputFile(output, { flag: f.output ? '-o' : undefined, force: f.force });
      const method: Method = f.method === 'minmax' ? { kind: 'minmax' } : { kind: 'percentile', percentile: f.percentile ?? 99.99 };
      const bar = progress(!f.quiet && !f.json);
      const options: QuantizeOptions = {
        model,
        output,
        calibrate: f.calibrate,
        dataset: f.dataset,
        split: f.split,
        images: f.calibrationImages,
        seed: f.seed,
        method,
        weightBits: f.weightBits === '8' ? 8 : 7,
        arrangement: { residual: f.residual, preact: f.preact, fc: f.fc },
        report: f.report,
        threads: f.threads,
        batch: f.batch,
        onProgress: bar.update,
      };
      let r: QuantizeResult;
      try {
        r = await quantizeModel(options);
      } catch (e) {
        // A request that cannot be met is exit 2; a calibration that fails (nothing decodes, an overflowing net) exit 1.
        if (e instanceof QuantizeError) throw new CliError(e.message);
        throw e;
      } finally {
        bar.stop();
      }
      if (r.skipped.length > 0) {
        console.error(`skipped ${r.skipped.length} file${r.skipped.length > 1 ? 's' : ''} that could not be read or decoded as images:`);
        for (const s of r.skipped.slice(0, 10)) console.error(`  ${s.file}: ${s.reason}`);
        if (r.skipped.length > 10) console.error(`  ... and ${r.skipped.length - 10} more${f.json ? '' : ' (--json lists them all)'}`);
      }
      if (f.json) {
        console.log(JSON.stringify(jsonResult(r)));
        return;
      }
      const cal = r.record.calibration;
      if (r.sqnr) {
        console.log('per-layer SQNR on the calibration images, worst first (SQNR: int8 model vs float, all earlier layers quantised; own: this output\'s u8 rounding alone)');
        for (const line of sqnrTable(r.sqnr)) console.log(line);
        console.log('');
      }
      console.log(`calibrated on ${cal.images} images of ${cal.data} (${describeMethod(method)}, seed ${cal.seed}${cal.skipped ? `, ${cal.skipped} skipped` : ''})`);
      console.log(`quantised ${r.convs} convolutions${r.depthwise ? ` (${r.depthwise} of them BatchNorms as depthwise 1x1)` : ''}${r.gemms ? ` and ${r.gemms} Gemm` : ''}: ${r.record.scheme}`);
      console.log(`wrote ${r.output}: ${(r.bytes / 1e6).toFixed(1)} MB (${((100 * r.bytes) / r.floatBytes).toFixed(0)}% of the float model's ${(r.floatBytes / 1e6).toFixed(1)} MB) in ${r.seconds.toFixed(1)} s`);
      console.log(`next: resnet-onnx eval --model ${r.output}${f.calibrate.includes('fashion-mnist') ? '' : ' --data DATA'}   (or: resnet-onnx serve --model ${r.output})`);
    });
}
