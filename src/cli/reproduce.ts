// `resnet-onnx reproduce table1|table2`: the paper's ablation studies, every row trained with one recipe, in a
// study folder that can be run in parts (a finished row is not rerun, a stopped one resumes).

import { join } from 'node:path';
import { type Command, Option } from 'commander';
import type { Dataset } from '../models/config.js';
import { RESULTS_HTML, RESULTS_JSON, RESULTS_MD, type StudyEvent, type StudySettings, StudyError, readStudySettings, runStudy } from '../reproduce/study.js';
import { TABLES, type StudyTable } from '../reproduce/tables.js';
import { DEBIAN_FASHION_MNIST } from '../train/datasets.js';
import { CliError, intArg, listArg, rangeArg } from './common.js';
import { formatDuration, stepsArg } from './train.js';

interface ReproduceFlags {
  dataset?: Dataset;
  data?: string;
  depth?: number;
  stages?: number[];
  iterations?: number;
  batch?: number;
  lr?: number;
  milestones?: number[];
  warmupIterations?: number;
  evalEvery?: number;
  logEvery?: number;
  trainLimit?: number;
  testLimit?: number;
  seeds: number;
  seed: number;
  rows?: string;
  out?: string;
  threads?: number;
  quiet?: boolean;
}

const DEFAULT_ITERATIONS = 200;
/** The paper's CIFAR recipe (appendix): lr 0.1, x0.1 at 32k and 48k, and lr 0.01 for the first 400 iterations. */
const PAPER_MILESTONES = [32_000, 48_000];
const PAPER_WARMUP = { lr: 0.01, iterations: 400 };

/** `--milestones`: train's increasing list, or none (a constant rate after any warm-up). */
function milestonesArg(v: string): number[] {
  return v.trim() === 'none' ? [] : stepsArg('--milestones')(v);
}

/** The rows `--rows` names, in the table's order; an unknown name is refused with the table's names. */
function selectRows(table: StudyTable, given: string | undefined): StudyTable['rows'] {
  if (given === undefined) return table.rows;
  const names = given.split(',').map((s) => s.trim()).filter(Boolean);
  const ids = table.rows.map((r) => r.id);
  const unknown = names.filter((n) => !ids.includes(n));
  if (unknown.length || names.length === 0)
    throw new CliError(`--rows: ${unknown.length ? `no row ${unknown.map((u) => `'${u}'`).join(', ')} in ${table.name}` : 'give at least one row'} (its rows: ${ids.join(', ')})`);
  return table.rows.filter((r) => names.includes(r.id));
}

/** The study's settings: flags given, else the study folder's (when --out holds one), else the defaults. */
function settingsFrom(table: StudyTable, f: ReproduceFlags, given: (k: keyof ReproduceFlags) => boolean, existing: StudySettings | undefined): StudySettings {
  const pick = <K extends keyof ReproduceFlags, V>(k: K, fromStudy: V | undefined, fallback: () => V, cast: (x: NonNullable<ReproduceFlags[K]>) => V): V =>
    given(k) ? cast(f[k] as NonNullable<ReproduceFlags[K]>) : fromStudy !== undefined ? fromStudy : fallback();
  const id = <T,>(x: T): T => x;
  const dataset = pick('dataset', existing?.dataset, () => 'fashion-mnist' as Dataset, id);
  if (dataset === 'imagenet') throw new CliError(`--dataset imagenet: the paper's ${table.name} is a CIFAR study (ResNet-110/164 at 32x32); use cifar10, cifar100, fashion-mnist or mnist`);
  const data = pick('data', existing?.data, () => (dataset === 'fashion-mnist' ? DEBIAN_FASHION_MNIST : ''), id);
  if (!data) throw new CliError(`--data is required for ${dataset} (nothing can be downloaded here; point it at the dataset's folder)`);
  if (given('depth') && given('stages')) throw new CliError('--depth and --stages conflict: give one');
  const stages = given('stages') ? f.stages! : given('depth') ? null : (existing?.stages ?? null);
  const depth = stages ? null : pick('depth', existing?.depth ?? undefined, () => table.depths[0], id);
  if (depth !== null && !table.depths.includes(depth))
    throw new CliError(`--depth ${depth}: the paper's ${table.name} reports ${table.depths.map((d) => `ResNet-${d}`).join(' and ')}; give ${table.depths.join(' or ')} (or --stages for a small net)`);
  const iterations = pick('iterations', existing?.iterations, () => DEFAULT_ITERATIONS, id);
  // The paper's schedule as it is, cut at the study's length: drops at 32k and 48k where the study reaches them.
  const milestones = pick('milestones', existing?.milestones, () => PAPER_MILESTONES.filter((m) => m < iterations), id);
  if (milestones.some((m) => m >= iterations)) throw new CliError(`--milestones ${milestones.join(',')} must fall within the ${iterations} iterations`);
  const warmupIterations = pick('warmupIterations', existing ? (existing.warmup?.iterations ?? 0) : undefined, () => PAPER_WARMUP.iterations, id);
  const warmup = warmupIterations > 0 ? { lr: PAPER_WARMUP.lr, iterations: warmupIterations } : null;
  const evalEvery = pick('evalEvery', existing?.evalEvery, () => Math.max(1, Math.round(iterations / 10)), id);
  const logEvery = pick('logEvery', existing?.logEvery, () => Math.max(1, Math.round(iterations / 40)), id);
  return {
    table: table.name,
    dataset,
    data,
    depth,
    stages,
    iterations,
    batch: pick('batch', existing?.batch, () => 128, id),
    lr: pick('lr', existing?.lr, () => 0.1, id),
    milestones,
    gamma: existing?.gamma ?? 0.1,
    warmup,
    evalEvery,
    logEvery,
    trainLimit: pick('trainLimit', existing?.trainLimit ?? undefined, () => null, id),
    testLimit: pick('testLimit', existing?.testLimit ?? undefined, () => null, id),
  };
}

/** The command line that reproduces the study, every setting spelled out. */
function commandLine(table: StudyTable, s: StudySettings, seeds: number, seed: number, out: string): string {
  const a = [`npx resnet-onnx reproduce ${table.name} --dataset ${s.dataset}`];
  if (s.dataset !== 'fashion-mnist' || s.data !== DEBIAN_FASHION_MNIST) a.push(`--data ${s.data}`);
  a.push(s.stages ? `--stages ${s.stages.join(',')}` : `--depth ${s.depth}`);
  a.push(`--iterations ${s.iterations} --batch ${s.batch} --lr ${s.lr} --milestones ${s.milestones.join(',') || 'none'}`);
  a.push(`--warmup-iterations ${s.warmup?.iterations ?? 0}`);
  a.push(`--eval-every ${s.evalEvery} --log-every ${s.logEvery}`);
  if (s.trainLimit !== null) a.push(`--train-limit ${s.trainLimit}`);
  if (s.testLimit !== null) a.push(`--test-limit ${s.testLimit}`);
  a.push(`--seeds ${seeds}${seed !== 0 ? ` --seed ${seed}` : ''} --out ${out}`);
  return a.join(' ');
}

function progressLine(e: StudyEvent): string {
  const at = `[${e.index}/${e.runs}] ${e.run.row.id} seed ${e.run.seed}`;
  switch (e.type) {
    case 'start':
      return `${at}: ${e.run.row.label}: ${e.state === 'partial' ? `resuming at iteration ${e.from}` : 'training'} (${e.run.dir})`;
    case 'skip':
      return `${at}: ${e.state === 'done' ? `finished (${e.iteration} iterations)` : `diverged at iteration ${e.iteration}`}, not rerun`;
    case 'train': {
      const t = e.event;
      return `${at}: iter ${t.iteration} loss ${t.loss.toFixed(4)} train acc ${t.accuracy.toFixed(1)}% ${t.imagesPerSecond.toFixed(0)} img/s | row ETA ${e.rowEta === null ? '-' : formatDuration(e.rowEta)} | study ETA ${e.totalEta === null ? '-' : formatDuration(e.totalEta)}`;
    }
    case 'eval':
      return `${at}: eval @${e.event.iteration}: test error ${e.event.top1Error.toFixed(2)}% (${e.event.samples} images, ${e.event.seconds.toFixed(1)} s)`;
    case 'diverged':
      return `${at}: diverged at iteration ${e.iteration} (recorded as a fail; not rerun): ${e.message}`;
    case 'done':
      return `${at}: done in ${formatDuration(e.seconds)}${e.testError === null ? '' : `: test error ${e.testError.toFixed(2)}%`}`;
  }
}

export function reproduceCommand(prog: Command): void {
  prog
    .command('reproduce')
    .description("reproduce one of the paper's ablation tables at small scale: every row trained with one recipe, results beside the paper's")
    .argument('<table>', `the study: ${Object.keys(TABLES).join(' (shortcuts, Fig. 3) or ')} (activations, Fig. 4)`)
    .addOption(new Option('--dataset <name>', 'dataset (default fashion-mnist; CIFAR needs --data)').choices(['cifar10', 'cifar100', 'fashion-mnist', 'mnist']))
    .option('--data <dir>', `dataset folder (Fashion-MNIST defaults to ${DEBIAN_FASHION_MNIST})`)
    .option('-d, --depth <n>', "the base net's depth: table1 110; table2 110 or 164", intArg('--depth'))
    .option('--stages <n>', 'units per stage of a small basic net instead of --depth (quick trials and tests)', listArg)
    .option('--iterations <n>', `iterations per row (default ${DEFAULT_ITERATIONS}; the paper trained 64k)`, intArg('--iterations'))
    .option('--batch <n>', 'batch size (default 128, the paper\'s)', intArg('--batch'))
    .option('--lr <rate>', 'base learning rate (default 0.1)', rangeArg('--lr', Number.MIN_VALUE))
    .option('--milestones <list>', "iterations at which lr drops x0.1, or none (default: the paper's 32000,48000, those within --iterations)", milestonesArg)
    .option('--warmup-iterations <n>', "the paper's warm-up: lr 0.01 for the first n iterations (default 400, the paper's; 0: none)", intArg('--warmup-iterations', 0))
    .option('--eval-every <n>', 'test-set evaluations for the curves every n iterations (default --iterations / 10)', intArg('--eval-every'))
    .option('--log-every <n>', 'a training-loss point every n iterations (default --iterations / 40)', intArg('--log-every'))
    .option('--train-limit <n>', 'use only the first n training images', intArg('--train-limit'))
    .option('--test-limit <n>', 'use only the first n test images', intArg('--test-limit'))
    .option('--seeds <k>', 'runs per row, seeds --seed ... --seed + k - 1; the table reports the median and spread', intArg('--seeds'), 1)
    .option('--seed <n>', 'the first seed', intArg('--seed', 0), 0)
    .option('--rows <list>', 'run only these rows (comma-separated ids; default all); the results cover every row run so far')
    .option('--out <dir>', 'the study folder (default runs/reproduce-<table>): one folder per row and seed, results.md, results.json, index.html; rerun to continue it')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)', intArg('--threads'))
    .option('-q, --quiet', 'no progress output')
    .action(async (name: string, flags: ReproduceFlags, cmd: Command) => {
      const table = TABLES[name];
      if (!table) throw new CliError(`unknown study '${name}' (allowed: ${Object.keys(TABLES).join(', ')})`);
      const given = (k: keyof ReproduceFlags): boolean => cmd.getOptionValueSource(k) === 'cli';
      const out = flags.out ?? join('runs', `reproduce-${table.name}`);
      const existing = readStudySettings(out);
      if (existing && existing.table !== table.name) throw new StudyError(`${out} holds a ${existing.table} study, not ${table.name}: give another --out`);
      const settings = settingsFrom(table, flags, given, existing);
      const rows = selectRows(table, flags.rows);
      const seeds = Array.from({ length: flags.seeds }, (_, i) => flags.seed + i);
      const command = commandLine(table, settings, flags.seeds, flags.seed, out);
      console.log(`${table.title}: ${rows.length} row${rows.length > 1 ? 's' : ''} x ${seeds.length} seed${seeds.length > 1 ? 's' : ''} in ${out}`);
      console.log(`reproduce: ${command}`);
      const results = await runStudy({
        out,
        table,
        settings,
        rows,
        seeds,
        threads: flags.threads,
        command,
        onEvent: (e) => {
          if (!flags.quiet) console.error(progressLine(e));
        },
      });
      const finished = results.rows.filter((r) => r.median).length;
      console.log(`results: ${finished} of ${results.rows.length} rows finished; ${join(out, RESULTS_MD)}, ${join(out, RESULTS_JSON)}, ${join(out, RESULTS_HTML)}`);
      for (const c of results.checks) console.log(`${c.holds === null ? '-' : c.holds ? 'yes' : 'no'}: ${c.text}`);
    });
}
