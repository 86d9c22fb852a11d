// `resnet-onnx train`: the paper's recipes on real data, through training-step graphs in onnxruntime.

import { join } from 'node:path';
import { type Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { DEFAULT_SGD } from '../export/training.js';
import { describe } from '../models/config.js';
import { graphName } from '../models/preact.js';
import { type ColourAugmentation, IMAGENET_COLOUR, NORMALISE_MODES, type NormaliseMode, defaultAugmentation, describeAugmentation, withColour } from '../train/augment.js';
import { DEBIAN_FASHION_MNIST, type DatasetKind, openDataset } from '../train/datasets.js';
import { type Schedule, paperSchedule } from '../train/schedule.js';
import { type TrainEvent, type TrainOptions, train } from '../train/trainer.js';
import { CliError, type ModelFlags, configFrom, intArg, listArg, modelOptions, numArg, rangeArg } from './common.js';

/** The trainer's options that are flags as they are; the rest (schedule, SGD, colour, data) are built from flags. */
type PassedThrough = 'batch' | 'seed' | 'evalEvery' | 'logEvery' | 'checkpointEvery' | 'resume' | 'trainLimit' | 'testLimit' | 'ep' | 'threads' | 'plot';

interface TrainFlags extends ModelFlags, Pick<TrainOptions, PassedThrough> {
  data?: string;
  out?: string;
  iterations?: number;
  epochs?: number;
  lr?: number;
  milestones?: number[];
  milestoneEpochs?: number[];
  gamma: number;
  warmup?: boolean;
  warmupLr: number;
  warmupIterations: number;
  momentum: number;
  weightDecay: number;
  nesterov?: boolean;
  decayOn: 'all' | 'weights';
  colourJitter?: number;
  lighting?: number;
  normalise: NormaliseMode;
  quiet?: boolean;
}

function progress(total: number, start: number, quiet: boolean): { event: (e: TrainEvent) => void; stop: () => void } {
  const line = (e: TrainEvent): string =>
    e.type === 'train'
      ? `iter ${e.iteration}/${total} epoch ${e.epoch} loss ${e.loss.toFixed(4)} acc ${e.accuracy.toFixed(2)}% lr ${e.lr} ${e.imagesPerSecond.toFixed(1)} img/s`
      : e.type === 'eval'
        ? `eval @${e.iteration}: top-1 error ${e.top1Error.toFixed(2)}%${e.top5Error === null ? '' : `, top-5 error ${e.top5Error.toFixed(2)}%`} (${e.samples} images, ${e.seconds.toFixed(1)} s)`
        : `checkpoint @${e.iteration}: ${e.path}`;
  if (quiet) return { event: () => {}, stop: () => {} };
  if (!process.stderr.isTTY) return { event: (e) => console.log(line(e)), stop: () => {} };
  const multi = new cliProgress.MultiBar(
    { stream: process.stderr, format: '{bar} {value}/{total} | loss {loss} | acc {acc}% | lr {lr} | {ips} img/s | ETA {eta_formatted}', hideCursor: true, etaBuffer: 20 },
    cliProgress.Presets.shades_classic,
  );
  const bar = multi.create(total, start, { loss: '-', acc: '-', lr: '-', ips: '-' });
  return {
    event(e) {
      if (e.type === 'train') bar.update(e.iteration, { loss: e.loss.toFixed(4), acc: e.accuracy.toFixed(1), lr: e.lr.toPrecision(2), ips: e.imagesPerSecond.toFixed(0) });
      else multi.log(`${line(e)}\n`);
    },
    stop: () => multi.stop(),
  };
}

export function trainCommand(prog: Command): void {
  modelOptions(prog.command('train').description('train a pre-activation ResNet on real data with the paper\'s recipe'))
    .option('--data <dir>', `dataset folder (CIFAR binary, MNIST-style IDX, or an image folder with train/ and val/); Fashion-MNIST defaults to ${DEBIAN_FASHION_MNIST}`)
    .option('--out <dir>', 'output folder for log.jsonl, checkpoint.safetensors, model.onnx, curves.html (default runs/<name>)')
    .option('--batch <n>', 'batch size (paper: 128 CIFAR, 256 ImageNet)', intArg('--batch'), 128)
    .option('--seed <n>', 'seed for initial weights, data order and augmentation', intArg('--seed', 0), 0)
    .option('--iterations <n>', 'iterations to train (default: the paper\'s: 64k CIFAR, 90 epochs ImageNet)', intArg('--iterations'))
    .option('--epochs <n>', 'train this many epochs instead of --iterations', intArg('--epochs'))
    .option('--lr <rate>', 'base learning rate (default 0.1)', numArg('--lr'))
    .option('--milestones <list>', 'iterations at which lr is divided by 10 (default 32000,48000 CIFAR)', listArg)
    .option('--milestone-epochs <list>', 'the same in epochs (default 30,60 ImageNet)', listArg)
    .option('--gamma <f>', 'lr factor at each milestone', numArg('--gamma'), 0.1)
    .option('--warmup', 'paper appendix warm-up: lr 0.01 for the first 400 iterations')
    .option('--warmup-lr <rate>', 'warm-up learning rate', numArg('--warmup-lr'), 0.01)
    .option('--warmup-iterations <n>', 'warm-up length', intArg('--warmup-iterations'), 400)
    .option('--momentum <mu>', 'SGD momentum', numArg('--momentum'), DEFAULT_SGD.momentum)
    .option('--weight-decay <wd>', 'weight decay', numArg('--weight-decay'), DEFAULT_SGD.weightDecay)
    .option('--nesterov', 'Nesterov momentum (fb.resnet.torch)')
    .addOption(new Option('--decay-on <which>', 'weight decay on all learned tensors or only conv/FC weights').choices(['all', 'weights']).default('all'))
    .option('--eval-every <n>', 'evaluate on the test split every n iterations (0: at the end only)', intArg('--eval-every', 0), 1000)
    .option('--log-every <n>', 'log a training line every n iterations', intArg('--log-every'), 20)
    .option('--checkpoint-every <n>', 'write a checkpoint every n iterations (0: at the end only)', intArg('--checkpoint-every', 0), 1000)
    .option('--resume <checkpoint>', 'continue a run from its checkpoint.safetensors (same flags)')
    .option('--train-limit <n>', 'use only the first n training images', intArg('--train-limit'))
    .option('--test-limit <n>', 'use only the first n test images', intArg('--test-limit'))
    .option('--colour-jitter <f>', `ImageNet: brightness, contrast and saturation factors from [1 - f, 1 + f], in random order (default ${IMAGENET_COLOUR.jitter}; 0: off)`, rangeArg('--colour-jitter', 0, 1, '0 turns it off'))
    .option('--lighting <sigma>', `ImageNet: AlexNet PCA lighting, std of its coefficients (default ${IMAGENET_COLOUR.lighting}; 0: off)`, rangeArg('--lighting', 0, Infinity, '0 turns it off'))
    .addOption(new Option('--normalise <how>', "per-channel: the dataset's mean and std; per-pixel: subtract the training split's mean image (the paper's CIFAR recipe)").choices([...NORMALISE_MODES]).default('per-channel'))
    .addOption(new Option('--ep <provider>', 'onnxruntime execution provider').choices(['cpu', 'cuda', 'webgpu']).default('cpu'))
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)', intArg('--threads'))
    .option('--no-plot', 'do not write curves.html')
    .option('-q, --quiet', 'no progress output')
    .action(async (f: TrainFlags) => {
      const cfg = configFrom(f);
      const kind = (f.dataset ?? cfg.dataset) as DatasetKind;
      const dir = f.data ?? (kind === 'fashion-mnist' ? DEBIAN_FASHION_MNIST : undefined);
      if (!dir) throw new CliError(`--data is required for ${kind} (nothing can be downloaded here; point it at the dataset's folder)`);
      if (f.iterations !== undefined && f.epochs !== undefined) throw new CliError('--iterations and --epochs conflict: give one');
      if (f.milestones && f.milestoneEpochs) throw new CliError('--milestones and --milestone-epochs conflict: give one');
      const colour = colourFlags(f, kind);
      if (f.normalise === 'per-pixel' && kind === 'imagenet') throw new CliError('--normalise per-pixel needs images of one size held in memory (CIFAR, MNIST); ImageNet images differ in size: use --normalise per-channel');
      const train0 = await openDataset({ kind, dir }, 'train');
      const samples = Math.min(train0.length, f.trainLimit ?? Infinity);
      const perEpoch = Math.floor(samples / f.batch);
      if (perEpoch < 1) throw new CliError(`--batch ${f.batch} is larger than the ${samples} training images`);
      const paper = paperSchedule(cfg.family, perEpoch);
      const iterations = f.iterations ?? (f.epochs !== undefined ? f.epochs * perEpoch : paper.iterations);
      const milestones = f.milestones ?? (f.milestoneEpochs ? f.milestoneEpochs.map((e) => e * perEpoch) : f.iterations !== undefined || f.epochs !== undefined ? scaled(paper, iterations) : paper.milestones);
      const schedule: Schedule = { lr: f.lr ?? paper.lr, milestones, gamma: f.gamma, iterations, warmup: f.warmup ? { lr: f.warmupLr, iterations: f.warmupIterations } : null };
      const out = f.out ?? join('runs', `${graphName(cfg).replace(/_/g, '-')}-${kind}`);
      console.log(`${describe(cfg)} on ${kind} (${samples} training images, ${perEpoch} iterations per epoch)`);
      console.log(`augmentation: ${describeAugmentation(withColour(defaultAugmentation(kind, 'train'), colour))}; normalise ${f.normalise}`);
      console.log(`schedule: lr ${schedule.lr}, x${schedule.gamma} at [${schedule.milestones.join(', ')}], ${iterations} iterations${schedule.warmup ? `, warm-up ${schedule.warmup.lr} for ${schedule.warmup.iterations}` : ''}; writing to ${out}`);
      const bar = progress(iterations, 0, f.quiet ?? false);
      try {
        const r = await train({
          cfg,
          data: { kind, dir },
          out,
          batch: f.batch,
          seed: f.seed,
          schedule,
          sgd: { momentum: f.momentum, weightDecay: f.weightDecay, nesterov: f.nesterov ?? false, decayOn: f.decayOn },
          evalEvery: f.evalEvery,
          logEvery: f.logEvery,
          checkpointEvery: f.checkpointEvery,
          resume: f.resume,
          trainLimit: f.trainLimit,
          testLimit: f.testLimit,
          colour,
          normalise: f.normalise,
          ep: f.ep,
          threads: f.threads,
          plot: f.plot,
          onEvent: bar.event,
        });
        bar.stop();
        const e = r.lastEval;
        console.log(`done: ${r.iterations} iterations in ${r.seconds.toFixed(0)} s${e ? `; test top-1 error ${e.top1Error.toFixed(2)}%` : ''}; model ${r.model}, checkpoint ${r.checkpoint}`);
      } catch (err) {
        bar.stop();
        throw err;
      }
    });
}

/** The colour flags given; refused where they would do something the dataset's recipe has no place for. */
function colourFlags(f: TrainFlags, kind: DatasetKind): Partial<ColourAugmentation> | undefined {
  const given: [string, number | undefined][] = [
    ['--colour-jitter', f.colourJitter],
    ['--lighting', f.lighting],
  ];
  if (kind !== 'imagenet') {
    for (const [flag, v] of given)
      if (v !== undefined && v !== 0) throw new CliError(`${flag} applies to ImageNet training (random-sized crops); the ${kind} recipe has no colour stage: leave it out or give 0`);
    return undefined;
  }
  if (f.colourJitter === undefined && f.lighting === undefined) return undefined;
  return { ...(f.colourJitter !== undefined ? { jitter: f.colourJitter } : {}), ...(f.lighting !== undefined ? { lighting: f.lighting } : {}) };
}

/** The paper's milestones (at 50% and 75% of training) for a run of another length. */
function scaled(paper: Schedule, iterations: number): number[] {
  return paper.milestones.map((m) => Math.round((m / paper.iterations) * iterations));
}
