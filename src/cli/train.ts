// `resnet-onnx train`: the paper's recipes on real data, through training-step graphs in onnxruntime.

import { dirname, join, resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { DEFAULT_SGD } from '../export/training.js';
import { type ResNetConfig, describe } from '../models/config.js';
import { graphName } from '../models/preact.js';
import { type ColourAugmentation, IMAGENET_COLOUR, NORMALISE_MODES, type NormaliseMode, defaultAugmentation, describeAugmentation, withColour } from '../train/augment.js';
import { type CheckpointInfo, type FieldDifference, type Recipe, architectureFields, describeDifferences, differences, flagText, parseRecipe, readCheckpointInfo, recipeFields } from '../train/checkpoint.js';
import { DEBIAN_FASHION_MNIST, type DatasetKind, openDataset } from '../train/datasets.js';
import { CHECKPOINT_FILE, CURVES_FILE, LOG_FILE, MODEL_FILE, checkRunFolder, nextFreeFolder } from '../train/run-folder.js';
import { type Schedule, paperSchedule, scaledMilestones, scheduleProblems } from '../train/schedule.js';
import { type TrainEvent, type TrainOptions, train } from '../train/trainer.js';
import { checkInputFile } from '../util/files.js';
import { CliError, type ModelFlags, configFrom, intArg, modelOptions, numArg, rangeArg } from './common.js';
/** The trainer's options that are flags as they are; the rest (schedule, SGD, colour, data) are built from flags. */
type PassedThrough = 'batch' | 'seed' | 'evalEvery' | 'logEvery' | 'checkpointEvery' | 'resume' | 'trainLimit' | 'testLimit' | 'ep' | 'threads' | 'plot' | 'force';

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

/** A duration as "42s", "4m05s", "2h07m": seconds are rounded once, so "1m60s" cannot happen. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const t = Math.round(seconds);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const s = t % 60;
  const two = (n: number): string => String(n).padStart(2, '0');
  return h > 0 ? `${h}h${two(m)}m` : m > 0 ? `${m}m${two(s)}s` : `${s}s`;
}

/** Progress on stderr: a bar on a terminal, else one line per event; the ETA from this process's own pace. */
function progress(total: number, start: number, quiet: boolean): { event: (e: TrainEvent) => void; stop: () => void } {
  const eta = (e: Extract<TrainEvent, { type: 'train' }>): string => {
    const done = e.iteration - start;
    return done > 0 && e.elapsedSeconds > 0 ? formatDuration(((total - e.iteration) * e.elapsedSeconds) / done) : '-';
  };
  const line = (e: TrainEvent): string =>
    e.type === 'train'
      ? `iter ${e.iteration}/${total} epoch ${e.epoch} loss ${e.loss.toFixed(4)} acc ${e.accuracy.toFixed(2)}% lr ${e.lr} ${e.imagesPerSecond.toFixed(1)} img/s ETA ${eta(e)}`
      : e.type === 'eval'
        ? `eval @${e.iteration}: top-1 error ${e.top1Error.toFixed(2)}%${e.top5Error === null ? '' : `, top-5 error ${e.top5Error.toFixed(2)}%`} (${e.samples} images, ${e.seconds.toFixed(1)} s)`
        : e.type === 'checkpoint'
          ? `checkpoint @${e.iteration}: ${e.path}`
          : `resumed from iteration ${e.iteration}`;
  if (quiet) return { event: () => {}, stop: () => {} };
  if (!process.stderr.isTTY) return { event: (e) => e.type !== 'resume' && console.error(line(e)), stop: () => {} };
  const multi = new cliProgress.MultiBar(
    { stream: process.stderr, format: '{bar} {value}/{total} | loss {loss} | acc {acc}% | lr {lr} | {ips} img/s | ETA {eta}', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  const bar = multi.create(total, start, { loss: '-', acc: '-', lr: '-', ips: '-', eta: '-' });
  return {
    event(e) {
      if (e.type === 'train') bar.update(e.iteration, { loss: e.loss.toFixed(4), acc: e.accuracy.toFixed(1), lr: e.lr.toPrecision(2), ips: e.imagesPerSecond.toFixed(0), eta: eta(e) });
      else if (e.type !== 'resume') multi.log(`${line(e)}\n`);
    },
    stop: () => multi.stop(),
  };
}

/** A number that `ok` accepts; the error says what is allowed (`allowed`, e.g. "a number > 0"). */
function checkedNum(name: string, ok: (n: number) => boolean, allowed: string): (v: string) => number {
  const parse = numArg(name);
  return (v) => {
    const n = parse(v);
    if (!ok(n)) throw new InvalidArgumentError(`${name} must be ${allowed}, got '${v}'`);
    return n;
  };
}

/** Iterations (or epochs) at which the rate drops: positive integers, increasing. */
export function stepsArg(name: string): (v: string) => number[] {
  return (v) => {
    const parts = v.split(',').map((p) => p.trim());
    if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1)) throw new InvalidArgumentError(`${name} must be a comma-separated list of positive integers, got '${v}'`);
    const n = parts.map(Number);
    if (n.some((x, i) => i > 0 && x <= n[i - 1])) throw new InvalidArgumentError(`${name} must increase (each drop after the one before), got '${v}'`);
    return n;
  };
}

/** `train --resume X`: the checkpoint (X, or X/checkpoint.safetensors for a run folder), read without its tensors. */
function openResume(given: string): { info: CheckpointInfo; recipe: Recipe | undefined; folder: string } {
  let path = given;
  try {
    checkInputFile(given, '--resume');
  } catch (e) {
    // A run folder: its checkpoint.
    path = join(given, CHECKPOINT_FILE);
    if (!/is a folder/.test((e as Error).message)) throw e;
    try {
      checkInputFile(path, '--resume');
    } catch {
      throw new CliError(`--resume ${given}: the folder has no ${CHECKPOINT_FILE} (a run stopped before its first checkpoint cannot be resumed): start it over with --out ${given} --force`);
    }
  }
  const info = readCheckpointInfo(path);
  return { info, recipe: parseRecipe(info.run.recipe), folder: dirname(path) };
}

/** The architecture flags the user typed, as `architectureFields` names and spells them. */
function typedArchitecture(f: TrainFlags, given: (k: keyof TrainFlags) => boolean, family: ResNetConfig['family']): Map<string, string> {
  const m = new Map<string, string>();
  const put = (key: keyof TrainFlags, flag: string, text: () => string): void => {
    if (given(key)) m.set(flag, text());
  };
  put('depth', '--depth', () => String(f.depth));
  // CIFAR nets read `--stages n` as n units in each of their three stages.
  put('stages', '--stages', () => flagText.list(f.stages!.length === 1 && family === 'cifar' ? [f.stages![0], f.stages![0], f.stages![0]] : f.stages!));
  put('dataset', '--dataset', () => String(f.dataset));
  put('classes', '--classes', () => String(f.classes));
  put('unit', '--unit', () => String(f.unit));
  put('variant', '--variant', () => f.variant);
  put('shortcut', '--shortcut', () => f.shortcut);
  put('scale', '--scale', () => flagText.num(f.scale!));
  put('scaleResidual', '--scale-residual', () => flagText.bool(f.scaleResidual ?? false));
  put('gateBias', '--gate-bias', () => flagText.num(f.gateBias!));
  put('shortcutDropout', '--shortcut-dropout', () => flagText.num(f.shortcutDropout!));
  put('projection', '--projection', () => String(f.projection));
  return m;
}

/** The recipe flags the user typed, as `recipeFields` names and spells them (milestones in epochs are compared later). */
function typedRecipe(f: TrainFlags, given: (k: keyof TrainFlags) => boolean): Map<string, string> {
  const m = new Map<string, string>();
  const put = (key: keyof TrainFlags, flag: string, text: () => string): void => {
    if (given(key)) m.set(flag, text());
  };
  put('seed', '--seed', () => String(f.seed));
  put('batch', '--batch', () => String(f.batch));
  put('lr', '--lr', () => flagText.num(f.lr!));
  put('milestones', '--milestones', () => flagText.list(f.milestones!));
  put('gamma', '--gamma', () => flagText.num(f.gamma));
  put('warmup', '--warmup', () => flagText.bool(true));
  put('warmupLr', '--warmup-lr', () => flagText.num(f.warmupLr));
  put('warmupIterations', '--warmup-iterations', () => String(f.warmupIterations));
  put('momentum', '--momentum', () => flagText.num(f.momentum));
  put('weightDecay', '--weight-decay', () => flagText.num(f.weightDecay));
  put('nesterov', '--nesterov', () => flagText.bool(true));
  put('decayOn', '--decay-on', () => f.decayOn);
  put('trainLimit', '--train-limit', () => String(f.trainLimit));
  put('colourJitter', '--colour-jitter', () => flagText.num(f.colourJitter!));
  put('lighting', '--lighting', () => flagText.num(f.lighting!));
  put('normalise', '--normalise', () => f.normalise);
  return m;
}

function refuseDifferences(path: string, d: FieldDifference[]): void {
  if (d.length === 0) return;
  throw new CliError(
    `--resume ${path}: the checkpoint's run was made with other values: ${describeDifferences(d)}. A resumed run keeps its architecture and recipe: leave ${d.length > 1 ? 'these flags' : 'this flag'} out (or give the checkpoint's values), or start a new run with another --out`,
  );
}

export function trainCommand(prog: Command): void {
  modelOptions(prog.command('train').description('train a pre-activation ResNet on real data with the paper\'s recipe'))
    .option('--data <dir>', `dataset folder (CIFAR binary, MNIST-style IDX, or an image folder with train/ and val/); Fashion-MNIST defaults to ${DEBIAN_FASHION_MNIST}`)
    .option('--out <dir>', 'output folder for log.jsonl, checkpoint.safetensors, model.onnx, curves.html (default runs/<name>, or runs/<name>-2 ... if taken); one that holds a run needs --resume or --force')
    .option('--force', 'start over in an --out that holds a run, replacing its files')
    .option('--batch <n>', 'batch size (paper: 128 CIFAR, 256 ImageNet)', intArg('--batch'), 128)
    .option('--seed <n>', 'seed for initial weights, data order and augmentation', intArg('--seed', 0), 0)
    .option('--iterations <n>', 'iterations to train (default: the paper\'s: 64k CIFAR, 90 epochs ImageNet)', intArg('--iterations'))
    .option('--epochs <n>', 'train this many epochs instead of --iterations', intArg('--epochs'))
    .option('--lr <rate>', 'base learning rate (default 0.1)', checkedNum('--lr', (n) => n > 0, 'a number > 0'))
    .option('--milestones <list>', 'iterations at which lr is multiplied by --gamma (default 32000,48000 CIFAR; 50% and 75% of --iterations/--epochs)', stepsArg('--milestones'))
    .option('--milestone-epochs <list>', 'the same in epochs (default 30,60 ImageNet)', stepsArg('--milestone-epochs'))
    .option('--gamma <f>', 'lr factor at each milestone, in (0, 1]', checkedNum('--gamma', (n) => n > 0 && n <= 1, 'a number in (0, 1] (the factor the rate is multiplied by at each milestone)'), 0.1)
    .option('--warmup', 'paper appendix warm-up: lr 0.01 for the first 400 iterations')
    .option('--warmup-lr <rate>', 'warm-up learning rate (with --warmup)', checkedNum('--warmup-lr', (n) => n > 0, 'a number > 0'), 0.01)
    .option('--warmup-iterations <n>', 'warm-up length (with --warmup)', intArg('--warmup-iterations'), 400)
    .option('--momentum <mu>', 'SGD momentum, in [0, 1)', checkedNum('--momentum', (n) => n >= 0 && n < 1, 'a number in [0, 1)'), DEFAULT_SGD.momentum)
    .option('--weight-decay <wd>', 'weight decay, >= 0', rangeArg('--weight-decay', 0), DEFAULT_SGD.weightDecay)
    .option('--nesterov', 'Nesterov momentum (fb.resnet.torch)')
    .addOption(new Option('--decay-on <which>', 'weight decay on all learned tensors or only conv/FC weights').choices(['all', 'weights']).default('all'))
    .option('--eval-every <n>', 'evaluate on the test split every n iterations (0: at the end only)', intArg('--eval-every', 0), 1000)
    .option('--log-every <n>', 'log a training line every n iterations', intArg('--log-every'), 20)
    .option('--checkpoint-every <n>', 'write a checkpoint every n iterations (0: at the end only)', intArg('--checkpoint-every', 0), 1000)
    .option('--resume <checkpoint>', "continue a run from its checkpoint.safetensors (or its folder): flags left out are the checkpoint's, flags given must agree with it")
    .option('--train-limit <n>', 'use only the first n training images', intArg('--train-limit'))
    .option('--test-limit <n>', 'use only the first n test images', intArg('--test-limit'))
    .option('--colour-jitter <f>', `ImageNet: brightness, contrast and saturation factors from [1 - f, 1 + f], in random order (default ${IMAGENET_COLOUR.jitter}; 0: off)`, rangeArg('--colour-jitter', 0, 1, '0 turns it off'))
    .option('--lighting <sigma>', `ImageNet: AlexNet PCA lighting, std of its coefficients (default ${IMAGENET_COLOUR.lighting}; 0: off)`, rangeArg('--lighting', 0, Infinity, '0 turns it off'))
    .addOption(new Option('--normalise <how>', "per-channel: the dataset's mean and std; per-pixel: subtract the training split's mean image (the paper's CIFAR recipe)").choices([...NORMALISE_MODES]).default('per-channel'))
    .addOption(new Option('--ep <provider>', "onnxruntime execution provider: cpu, cuda (its provider is installed separately, see the README's GPU section) or webgpu; a GPU one that cannot start is refused, and where each op ran is said at start").choices(['cpu', 'cuda', 'webgpu']).default('cpu'))
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)', intArg('--threads'))
    .option('--no-plot', 'do not write curves.html')
    .option('-q, --quiet', 'no progress output')
    .action(async (flags: TrainFlags, cmd: Command) => {
      const given = (k: keyof TrainFlags): boolean => cmd.getOptionValueSource(k) === 'cli';
      if (flags.iterations !== undefined && flags.epochs !== undefined) throw new CliError('--iterations and --epochs conflict: give one');
      if (flags.milestones && flags.milestoneEpochs) throw new CliError('--milestones and --milestone-epochs conflict: give one');
      if (flags.resume && flags.force) throw new CliError('--resume and --force conflict: --resume continues the run, --force starts a new one over it; give one');

      // On --resume, a flag left out takes the checkpoint's value; one given must agree with it.
      const ck = flags.resume ? openResume(flags.resume) : undefined;
      const f: TrainFlags = { ...flags };
      let cfg: ResNetConfig;
      if (ck) {
        cfg = ck.info.cfg;
        const d = differences(typedArchitecture(flags, given, cfg.family), architectureFields(cfg));
        if (ck.recipe) for (const x of differences(typedRecipe(flags, given), recipeFields(ck.recipe, ck.info.run.seed, ck.info.run.batch))) if (!d.some((y) => y.field === x.field)) d.push(x);
        refuseDifferences(ck.info.path, d);
        const r = ck.recipe;
        const run = ck.info.run;
        const keep = <K extends keyof TrainFlags>(k: K, v: TrainFlags[K] | undefined): void => {
          if (!given(k) && v !== undefined) f[k] = v;
        };
        keep('seed', run.seed);
        keep('batch', run.batch);
        keep('data', run.settings?.data);
        keep('evalEvery', run.settings?.evalEvery);
        keep('logEvery', run.settings?.logEvery);
        keep('checkpointEvery', run.settings?.checkpointEvery);
        keep('testLimit', run.settings?.testLimit ?? undefined);
        if (r) {
          keep('lr', r.schedule.lr);
          keep('gamma', r.schedule.gamma);
          keep('warmup', r.schedule.warmup !== null);
          keep('warmupLr', r.schedule.warmup?.lr);
          keep('warmupIterations', r.schedule.warmup?.iterations);
          keep('momentum', r.sgd.momentum);
          keep('weightDecay', r.sgd.weightDecay);
          keep('nesterov', r.sgd.nesterov);
          keep('decayOn', r.sgd.decayOn);
          keep('trainLimit', r.trainLimit ?? undefined);
          keep('normalise', r.normalise ?? 'per-channel');
          if (cfg.dataset === 'imagenet') {
            keep('colourJitter', r.colour?.jitter ?? 0);
            keep('lighting', r.colour?.lighting ?? 0);
          }
        }
      } else cfg = configFrom(f);
      if (!f.warmup && (given('warmupLr') || given('warmupIterations'))) throw new CliError('--warmup-lr and --warmup-iterations shape the warm-up: add --warmup');
      if (f.nesterov && f.momentum === 0) throw new CliError('--nesterov needs a --momentum above 0 (Nesterov momentum with none is plain SGD)');
      const lengthGiven = f.iterations !== undefined || f.epochs !== undefined;
      if (ck && !lengthGiven) {
        // Known before any data is read: a run that records no length, or one that is finished.
        const at = ck.info.run.iteration;
        const length = ck.info.run.settings?.iterations;
        const theirs = ck.recipe?.schedule.milestones ?? [];
        const keepThem = theirs.length ? ` --milestones ${flagText.list(theirs)}` : '';
        if (length === undefined)
          throw new CliError(`--resume ${ck.info.path}: the checkpoint does not record how long its run is (an earlier version wrote it): give --iterations (or --epochs)${keepThem ? ` and${keepThem}` : ''}`);
        if (length <= at)
          throw new CliError(
            `--resume ${ck.info.path}: the run is finished (${at} of ${length} iterations). To train it longer: resnet-onnx train --resume ${ck.folder} --iterations N${keepThem} (N > ${at}; the milestones must be given because the default ones scale with --iterations)`,
          );
      }
      const kind = cfg.dataset as DatasetKind;
      const dir = f.data ?? (kind === 'fashion-mnist' ? DEBIAN_FASHION_MNIST : undefined);
      if (!dir) throw new CliError(`--data is required for ${kind} (nothing can be downloaded here; point it at the dataset's folder)`);
      const colour = colourFlags(f, kind);
      if (f.normalise === 'per-pixel' && kind === 'imagenet') throw new CliError('--normalise per-pixel needs images of one size held in memory (CIFAR, MNIST); ImageNet images differ in size: use --normalise per-channel');

      // The run's folder: a resumed run stays in its own; a new one never lands on a run without being asked to.
      let out: string;
      if (ck) {
        out = f.out ?? ck.folder;
        if (resolve(out) !== resolve(ck.folder)) checkRunFolder(out, false, `--out ${out}`, ck.folder);
      } else if (f.out !== undefined) {
        out = f.out;
        checkRunFolder(out, f.force ?? false, `--out ${out}`);
      } else {
        const base = join('runs', graphName(cfg).replace(/_/g, '-'));
        out = f.force ? base : nextFreeFolder(base);
      }

      const train0 = await openDataset({ kind, dir }, 'train');
      const samples = Math.min(train0.length, f.trainLimit ?? Infinity);
      const perEpoch = Math.floor(samples / f.batch);
      if (perEpoch < 1) throw new CliError(`--batch ${f.batch} is larger than the ${samples} training images`);
      const paper = paperSchedule(cfg.family, perEpoch);
      const fromEpochs = f.milestoneEpochs?.map((e) => e * perEpoch);
      let iterations: number;
      let milestones: number[];
      if (ck) {
        const at = ck.info.run.iteration;
        const length = ck.info.run.settings?.iterations;
        const theirs = ck.recipe?.schedule.milestones ?? paper.milestones;
        const keepThem = `--milestones ${flagText.list(theirs)}`;
        iterations = f.iterations ?? (f.epochs !== undefined ? f.epochs * perEpoch : length!);
        if (iterations <= at)
          throw new CliError(
            `--resume ${ck.info.path}: the run is at iteration ${at}; ${f.iterations !== undefined ? `--iterations ${iterations}` : `--epochs ${f.epochs} (${iterations} iterations)`} leaves nothing to train: give more to extend it${f.milestones || fromEpochs || !theirs.length ? '' : `, with ${keepThem}`}`,
          );
        if (fromEpochs) refuseDifferences(ck.info.path, differences(new Map([['--milestones', flagText.list(fromEpochs)]]), new Map([['--milestones', flagText.list(theirs)]])));
        if (f.milestones || fromEpochs) milestones = f.milestones ?? fromEpochs!;
        else if (iterations !== length && theirs.length > 0)
          throw new CliError(
            `--resume ${ck.info.path}: ${f.iterations !== undefined ? `--iterations ${iterations}` : `--epochs ${f.epochs} (${iterations} iterations)`} changes the run's length${length === undefined ? '' : ` from ${length}`}, and without --milestones the default milestones scale with it (to ${flagText.list(scaledMilestones(paper, iterations))}), which would change the schedule the run was trained with (${flagText.list(theirs)}). To extend it with its schedule, add ${keepThem}`,
          );
        else milestones = theirs;
      } else {
        iterations = f.iterations ?? (f.epochs !== undefined ? f.epochs * perEpoch : paper.iterations);
        milestones = f.milestones ?? fromEpochs ?? (lengthGiven ? scaledMilestones(paper, iterations) : paper.milestones);
      }
      const schedule: Schedule = { lr: f.lr ?? paper.lr, milestones, gamma: f.gamma, iterations, warmup: f.warmup ? { lr: f.warmupLr, iterations: f.warmupIterations } : null };
      const problems = scheduleProblems(schedule);
      if (problems.length) throw new CliError(problems.join('; '));

      console.log(`${describe(cfg)} on ${kind} (${samples} training images, ${perEpoch} iterations per epoch)`);
      console.log(`augmentation: ${describeAugmentation(withColour(defaultAugmentation(kind, 'train'), colour))}; normalise ${f.normalise}`);
      console.log(`schedule: lr ${schedule.lr}, x${schedule.gamma} at [${schedule.milestones.join(', ')}], ${iterations} iterations${schedule.warmup ? `, warm-up ${schedule.warmup.lr} for ${schedule.warmup.iterations}` : ''}; writing to ${out}`);
      const bar = progress(iterations, ck?.info.run.iteration ?? 0, f.quiet ?? false);
      const onEvent = (e: TrainEvent): void => {
        if (e.type === 'resume')
          console.log(`resumed from iteration ${e.iteration} of ${e.iterations} (${e.checkpoint}); ${LOG_FILE} cut back to it${e.dropped ? ` (${e.dropped} line${e.dropped > 1 ? 's' : ''} past it dropped)` : ''}`);
        bar.event(e);
      };
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
          resume: ck?.info.path,
          force: f.force,
          trainLimit: f.trainLimit,
          testLimit: f.testLimit,
          colour,
          normalise: f.normalise,
          ep: f.ep,
          threads: f.threads,
          onPlacement: (_placement, line) => console.log(line),
          plot: f.plot,
          onEvent,
        });
        bar.stop();
        const e = r.lastEval;
        const ran = r.iterations - r.startIteration;
        const whole = r.startIteration > 0 ? ` (resumed from iteration ${r.startIteration}: ${r.iterations} in all)` : '';
        console.log(`done: ${ran} iterations in ${formatDuration(r.seconds)}${whole}${e ? `; test top-1 error ${e.top1Error.toFixed(2)}%` : ''}`);
        console.log(`wrote ${out}: ${[MODEL_FILE, CHECKPOINT_FILE, LOG_FILE, ...(r.curves ? [CURVES_FILE] : [])].join(', ')}`);
        console.log(`next: resnet-onnx serve --model ${r.model}`);
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
