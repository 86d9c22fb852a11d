// `resnet-onnx eval`: top-1 / top-5 accuracy of a model on a labelled set (IDX, CIFAR, or a folder of class folders).

import { type Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { ClassMatchError } from '../eval/classes.js';
import { EvalError, type EvalReport, type Progress, evaluateModel, perClass } from '../eval/evaluate.js';
import { describeReported } from '../eval/reported.js';
import { DATASET_KINDS, type DatasetKind, type Split } from '../train/datasets.js';
import { CliError, intArg } from './common.js';

interface EvalFlags {
  model?: string;
  data?: string;
  dataset?: DatasetKind;
  split: Split;
  resize?: number;
  crop?: number;
  tenCrop?: boolean;
  batch?: number;
  limit?: number;
  perClass?: boolean;
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

function limitArg(v: string): number {
  if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError(`--limit must be a number of images >= 1, got '${v}'`);
  return Number(v);
}

/** How many skipped files the text report names; --json lists them all. */
const SKIPPED_SHOWN = 10;

function progress(enabled: boolean): { update: (p: Progress) => void; stop: () => void } {
  if (!enabled || !process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: 'eval {bar} {percentage}% | {value}/{total} images | top-1 {top1} | {rate} images/s | ETA {eta}s', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      if (!started) {
        bar.start(p.total, 0, { top1: '-', rate: '-' });
        started = true;
      }
      const scored = p.done - p.skipped;
      bar.update(p.done, { top1: scored > 0 ? `${((100 * p.correct1) / scored).toFixed(2)}%` : '-', rate: (p.done / Math.max(p.seconds, 1e-3)).toFixed(0) });
    },
    stop: () => started && bar.stop(),
  };
}

const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;

function jsonReport(r: EvalReport, withPerClass: boolean): object {
  const { predictions: _p, confusion: _c, labels: _l, where: _w, images, top1, top5, protocol, ...rest } = r;
  const pc = withPerClass ? perClass(r) : undefined;
  return {
    images,
    top1,
    top5,
    protocol,
    ...rest,
    seconds: Number(r.seconds.toFixed(3)),
    loopSeconds: Number(r.loopSeconds.toFixed(3)),
    imagesPerSecond: Number(r.imagesPerSecond.toFixed(1)),
    ...(pc ? { perClass: pc.classes, confused: pc.confused } : {}),
  };
}

function textReport(r: EvalReport, withPerClass: boolean): string[] {
  const lines = [
    `${r.model.name} (${r.model.architecture}${r.model.precision === 'int8' ? ', int8' : ''}) on ${r.data.description}: ${r.data.path}`,
    ...(r.model.quantization ? [`precision: ${r.model.quantization}`] : []),
    `protocol: ${r.protocol.text}${r.protocol.from === 'model metadata' ? '' : `; from the ${r.protocol.from}`}`,
    `${r.images} images: top-1 ${pct(r.top1)} (error ${pct(1 - r.top1)}), top-5 ${pct(r.top5)} (error ${pct(1 - r.top5)})`,
  ];
  if (r.reported) lines.push(`reported: ${describeReported(r.reported)}`);
  if (withPerClass) {
    const pc = perClass(r);
    const width = Math.min(40, Math.max(...pc.classes.map((c) => c.label.length)));
    lines.push('', 'per class (top-1):');
    for (const c of pc.classes) lines.push(`  ${String(c.index).padStart(4)}  ${c.label.slice(0, width).padEnd(width)}  ${pct(c.top1 ?? 0).padStart(7)}  of ${c.images}`);
    lines.push('', 'most confused (true -> predicted):');
    if (pc.confused.length === 0) lines.push('  none');
    for (const p of pc.confused) lines.push(`  ${r.labels[p.label]} -> ${r.labels[p.predicted]}: ${p.count} (${pct(p.share)} of ${r.labels[p.label]})`);
  }
  lines.push('', `${r.seconds.toFixed(1)} s, ${r.imagesPerSecond.toFixed(0)} images/s`);
  return lines;
}

export function evalCommand(prog: Command): void {
  prog
    .command('eval')
    .description('top-1 / top-5 accuracy of a model on a labelled set: IDX, CIFAR binary, or a folder of class folders')
    .option('--model <file>', 'ONNX model written by this project (export, train, import, pull)')
    .option('--data <path>', "labelled images: an IDX or CIFAR folder, an ImageNet-style folder (train/, val/), or <class>/<image> folders (default for a Fashion-MNIST model: Debian's /usr/share/datasets/fashion-mnist)")
    .addOption(new Option('--dataset <name>', 'how to read --data (default: told from its contents)').choices([...DATASET_KINDS]))
    .addOption(new Option('--split <name>', 'which split: test (IDX t10k, CIFAR test batch, val/) or train').choices(['test', 'train']).default('test'))
    .option('--resize <n>', "shorter side before the crop (default: the model's preprocessing metadata)", intArg('--resize'))
    .option('--crop <n>', "centre crop size (default: the model's; alone, keeps the model's resize/crop ratio)", intArg('--crop'))
    .option('--ten-crop', 'score 10 crops per image (4 corners and centre of the centre square, and their mirror images), softmax averaged')
    .option('--batch <n>', 'images per inference run (default 128 for crops up to 64 pixels, else 8)', intArg('--batch'))
    // 0 passes the parser so that the action can say why it is refused.
    .option('--limit <n>', 'evaluate N images spread evenly over the set', limitArg)
    .option('--per-class', 'also print per-class accuracy and the most confused pairs')
    .option('--threads <n>', 'onnxruntime threads (default: all cores)', intArg('--threads'))
    .option('--json', 'print one JSON object on stdout instead of text')
    .option('-q, --quiet', 'no progress bar')
    .action(async (f: EvalFlags) => {
      if (f.model === undefined) throw new CliError('--model FILE is required: the ONNX model to evaluate (e.g. --model models/preact-resnet20-fashion-mnist.onnx)');
      if (f.limit === 0) throw new CliError('--limit 0 evaluates nothing; give a number of images >= 1, or leave --limit out for the whole set');
      const bar = progress(!f.quiet);
      let r: EvalReport;
      try {
        r = await evaluateModel({
          model: f.model,
          data: f.data,
          dataset: f.dataset,
          split: f.split,
          resize: f.resize,
          crop: f.crop,
          tenCrop: f.tenCrop,
          batch: f.batch,
          limit: f.limit,
          threads: f.threads,
          onProgress: bar.update,
        });
      } catch (e) {
        if (e instanceof EvalError || e instanceof ClassMatchError) throw new CliError(e.message);
        throw e;
      } finally {
        bar.stop();
      }
      const skipped = r.skipped;
      if (skipped.length > 0) {
        console.error(`skipped ${skipped.length} file${skipped.length > 1 ? 's' : ''} that could not be read or decoded as images (not counted in the accuracy):`);
        for (const s of skipped.slice(0, SKIPPED_SHOWN)) console.error(`  ${s.file}: ${s.reason}`);
        if (skipped.length > SKIPPED_SHOWN) console.error(`  ... and ${skipped.length - SKIPPED_SHOWN} more${f.json ? '' : ' (--json lists them all)'}`);
      }
      for (const n of r.notes) console.error(`note: ${n}`);
      if (f.json) console.log(JSON.stringify(jsonReport(r, f.perClass ?? false)));
      else for (const line of textReport(r, f.perClass ?? false)) console.log(line);
    });
}
