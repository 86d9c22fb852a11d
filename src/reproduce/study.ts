// `reproduce`: trains every row of one of the paper's ablation tables with one recipe (same data order, seeds and
// schedule), each (row, seed) in its own run folder, so a study can be run in parts and across days: a finished
// run is not rerun, a stopped one resumes from its checkpoint. The results (markdown, JSON, a Fig. 3-style page)
// are rewritten from the run folders after every run, so they always say what is there.

import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../export/atomic.js';
import { DEFAULT_SGD } from '../export/training.js';
import { type Dataset, type ResNetConfig, resolveConfig } from '../models/config.js';
import { type DatasetKind } from '../train/datasets.js';
import { readCheckpointInfo } from '../train/checkpoint.js';
import { CHECKPOINT_FILE, LOG_FILE, type LogEntry, cutLog, isFreeFolder } from '../train/run-folder.js';
import type { Schedule } from '../train/schedule.js';
import { type TrainEvent, train } from '../train/trainer.js';
import { PathError } from '../util/files.js';
import { type StudyRow, type StudyTable, rowRequest } from './tables.js';
import { studyHtml, studyMarkdown } from './report.js';

/** The recipe and base net every row of a study shares; a study folder keeps it in study.json. */
export interface StudySettings {
  table: StudyTable['name'];
  dataset: Dataset;
  /** The dataset's folder. */
  data: string;
  /** The base net: a depth of the paper, or (small nets for tests) units per stage. */
  depth: number | null;
  stages: number[] | null;
  iterations: number;
  batch: number;
  lr: number;
  milestones: number[];
  gamma: number;
  /** The paper's warm-up for ResNet-110 (lr 0.01 for the first iterations), or null. */
  warmup: { lr: number; iterations: number } | null;
  evalEvery: number;
  logEvery: number;
  trainLimit: number | null;
  testLimit: number | null;
}

export const STUDY_FILE = 'study.json';
export const RESULTS_MD = 'results.md';
export const RESULTS_JSON = 'results.json';
export const RESULTS_HTML = 'index.html';
export const DIVERGED_FILE = 'diverged.json';

/** A study folder made with other settings, or a folder that is not a study's. Exit 2. */
export class StudyError extends PathError {}

/** The test error above which a run "fails", as Table 1 words it. */
export const FAIL_ERROR = 20;

/** Where a (row, seed) run stands. */
export type RunState = 'new' | 'partial' | 'done' | 'diverged';

export interface RunRef {
  row: StudyRow;
  seed: number;
  dir: string;
}

export const runDir = (out: string, row: StudyRow, seed: number): string => join(out, row.id, `seed${seed}`);

export function baseConfig(s: StudySettings, table: StudyTable, row: StudyRow): ResNetConfig {
  const base = s.stages ? { dataset: s.dataset, stages: s.stages, unit: 'basic' as const } : { dataset: s.dataset, depth: s.depth ?? undefined };
  return resolveConfig(rowRequest(table, row, base));
}

/** The iteration a run's checkpoint has reached, or 0. */
export function runState(dir: string, iterations: number): { state: RunState; iteration: number } {
  if (existsSync(join(dir, DIVERGED_FILE))) {
    const d = JSON.parse(readFileSync(join(dir, DIVERGED_FILE), 'utf8')) as { iteration: number };
    return { state: 'diverged', iteration: d.iteration };
  }
  const ck = join(dir, CHECKPOINT_FILE);
  if (!existsSync(ck)) return { state: 'new', iteration: 0 };
  const at = readCheckpointInfo(ck).run.iteration;
  return { state: at >= iterations ? 'done' : 'partial', iteration: at };
}

/** The settings fields that differ from a study folder's, as "--flag: theirs -> yours". */
function settingDifferences(theirs: StudySettings, yours: StudySettings): string[] {
  const flag: Record<keyof StudySettings, string> = {
    table: 'table',
    dataset: '--dataset',
    data: '--data',
    depth: '--depth',
    stages: '--stages',
    iterations: '--iterations',
    batch: '--batch',
    lr: '--lr',
    milestones: '--milestones',
    gamma: '--gamma',
    warmup: '--warmup',
    evalEvery: '--eval-every',
    logEvery: '--log-every',
    trainLimit: '--train-limit',
    testLimit: '--test-limit',
  };
  const out: string[] = [];
  for (const k of Object.keys(flag) as (keyof StudySettings)[]) {
    const a = JSON.stringify(theirs[k] ?? null);
    const b = JSON.stringify(yours[k] ?? null);
    if (a !== b) out.push(`${flag[k]} ${a} (the study's) against ${b} (this command's)`);
  }
  return out;
}

/**
 * Opens (or starts) the study folder `out` for `settings`: a new or empty folder gets study.json; one that holds
 * a study must hold this one (same table, net and recipe; rows and seeds may differ), else StudyError names each
 * difference; any other non-empty folder is refused.
 */
export function openStudy(out: string, settings: StudySettings): void {
  const file = join(out, STUDY_FILE);
  if (existsSync(file)) {
    let theirs: StudySettings;
    try {
      theirs = JSON.parse(readFileSync(file, 'utf8')) as StudySettings;
    } catch (e) {
      throw new StudyError(`${file} cannot be read (${(e as Error).message}); give another --out`);
    }
    const d = settingDifferences(theirs, settings);
    if (d.length)
      throw new StudyError(
        `${out} holds a study made with other settings: ${d.join('; ')}. Its finished rows would not compare with new ones: give the study's values (or leave the flags out), or another --out`,
      );
    return;
  }
  if (!isFreeFolder(out)) throw new StudyError(`${out} is not empty and holds no ${STUDY_FILE}: a study writes its row folders there; give a new or empty --out`);
  mkdirSync(out, { recursive: true });
  writeFileAtomic(file, (put) => put(new TextEncoder().encode(`${JSON.stringify(settings, null, 2)}\n`)));
}

/** Reads a study folder's settings (for `--out` alone: the flags left out come from it). */
export function readStudySettings(out: string): StudySettings | undefined {
  const file = join(out, STUDY_FILE);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as StudySettings;
}

export type StudyEvent =
  | { type: 'start'; run: RunRef; index: number; runs: number; state: RunState; from: number }
  | { type: 'skip'; run: RunRef; index: number; runs: number; state: RunState; iteration: number }
  | { type: 'train'; run: RunRef; index: number; runs: number; event: Extract<TrainEvent, { type: 'train' }>; rowEta: number | null; totalEta: number | null }
  | { type: 'eval'; run: RunRef; index: number; runs: number; event: Extract<TrainEvent, { type: 'eval' }> }
  | { type: 'diverged'; run: RunRef; index: number; runs: number; iteration: number; message: string }
  | { type: 'done'; run: RunRef; index: number; runs: number; seconds: number; testError: number | null };

export interface RunStudyOptions {
  out: string;
  table: StudyTable;
  settings: StudySettings;
  /** The rows to run (the table's order); the results cover every row with runs in the folder. */
  rows: readonly StudyRow[];
  seeds: readonly number[];
  threads?: number;
  /** The command line that reproduces the study, printed at the top of the results. */
  command: string;
  onEvent?: (e: StudyEvent) => void;
}

/** Trains the selected (row, seed) runs that are not finished, rewriting the results after each. */
export async function runStudy(o: RunStudyOptions): Promise<StudyResults> {
  openStudy(o.out, o.settings);
  const s = o.settings;
  const runs: RunRef[] = o.rows.flatMap((row) => o.seeds.map((seed) => ({ row, seed, dir: runDir(o.out, row, seed) })));
  // Configs first: a row the base net cannot take is refused before anything trains.
  const configs = runs.map((r) => baseConfig(s, o.table, r.row));
  // Where each run stands, read once: a run is only ever changed by this loop.
  const states = runs.map((r) => runState(r.dir, s.iterations));
  const remaining = states.map((st) => (st.state === 'done' || st.state === 'diverged' ? 0 : s.iterations - st.iteration));
  // This process's pace, evaluations included: seconds per iteration over the runs trained so far.
  let paceSeconds = 0;
  let paceIterations = 0;
  const schedule: Schedule = { lr: s.lr, milestones: s.milestones, gamma: s.gamma, iterations: s.iterations, warmup: s.warmup };
  let results = writeResults(o);
  for (const [i, run] of runs.entries()) {
    const st = states[i];
    const where = { run, index: i + 1, runs: runs.length };
    if (st.state === 'done' || st.state === 'diverged') {
      o.onEvent?.({ type: 'skip', ...where, state: st.state, iteration: st.iteration });
      continue;
    }
    o.onEvent?.({ type: 'start', ...where, state: st.state, from: st.iteration });
    const started = performance.now();
    let lastIteration = st.iteration;
    const eta = (iteration: number, elapsed: number): { rowEta: number | null; totalEta: number | null } => {
      const done = iteration - st.iteration;
      const its = paceIterations + done;
      if (its <= 0) return { rowEta: null, totalEta: null };
      const spi = (paceSeconds + elapsed) / its;
      const later = remaining.slice(i + 1).reduce((a, b) => a + b, 0);
      return { rowEta: (s.iterations - iteration) * spi, totalEta: (s.iterations - iteration + later) * spi };
    };
    try {
      mkdirSync(join(o.out, run.row.id), { recursive: true });
      await train({
        cfg: configs[i],
        data: { kind: s.dataset as DatasetKind, dir: s.data },
        out: run.dir,
        batch: s.batch,
        seed: run.seed,
        schedule,
        sgd: DEFAULT_SGD,
        evalEvery: s.evalEvery,
        logEvery: s.logEvery,
        checkpointEvery: s.evalEvery,
        ...(st.state === 'partial' ? { resume: join(run.dir, CHECKPOINT_FILE) } : {}),
        // A run folder without a checkpoint is this study's own run stopped before its first one: nothing to keep.
        force: st.state === 'new',
        ...(s.trainLimit !== null ? { trainLimit: s.trainLimit } : {}),
        ...(s.testLimit !== null ? { testLimit: s.testLimit } : {}),
        normalise: 'per-channel',
        ep: 'cpu',
        threads: o.threads,
        plot: false,
        onEvent: (e) => {
          if (e.type === 'train') {
            lastIteration = e.iteration;
            o.onEvent?.({ type: 'train', ...where, event: e, ...eta(e.iteration, (performance.now() - started) / 1000) });
          } else if (e.type === 'eval') o.onEvent?.({ type: 'eval', ...where, event: e });
        },
      });
    } catch (e) {
      const message = (e as Error).message;
      const m = /the loss became \S+ at iteration (\d+)/.exec(message);
      if (!m) throw e;
      // A row that diverges is a result (the paper's "fail"), not an error: recorded, and not rerun.
      const iteration = Number(m[1]);
      writeFileAtomic(join(run.dir, DIVERGED_FILE), (put) => put(new TextEncoder().encode(`${JSON.stringify({ iteration, message }, null, 2)}\n`)));
      o.onEvent?.({ type: 'diverged', ...where, iteration, message });
    }
    const seconds = (performance.now() - started) / 1000;
    paceSeconds += seconds;
    paceIterations += Math.max(1, lastIteration - st.iteration);
    remaining[i] = 0;
    results = writeResults(o);
    const r = results.rows.find((x) => x.id === run.row.id)?.runs.find((x) => x.seed === run.seed);
    o.onEvent?.({ type: 'done', ...where, seconds, testError: r?.testError ?? null });
  }
  return results;
}

/** One (row, seed) run as its folder tells it. */
export interface RunResult {
  seed: number;
  state: RunState;
  /** The iteration reached (where it diverged, for a diverged run). */
  iteration: number;
  /** Mean loss and error over the last logged window of training batches (augmented, as trained). */
  trainLoss: number | null;
  trainError: number | null;
  /** Test top-1 error of the last evaluation, and its iteration. */
  testError: number | null;
  testIteration: number | null;
  /** For the figure: [iteration, value] of every logged window and evaluation. */
  lossCurve: [number, number][];
  testCurve: [number, number][];
  seconds: number | null;
}

export interface RowResult {
  id: string;
  label: string;
  remark?: string;
  paper: number | 'fail' | null;
  /** The command that trains this row alone (seed 0). */
  trainCommand: string;
  runs: RunResult[];
  /** Over the finished (or diverged) runs: medians, and min and max as the spread. */
  median: { trainLoss: number | null; trainError: number | null; testError: number | null } | null;
  spread: { testError: [number, number]; trainLoss: [number, number] } | null;
  /** Our verdict in the paper's terms: above 20% test error (or diverged). */
  fails: boolean | null;
  /**
   * Whether the row learns at this budget: its median test error is more than 10 points below chance (90% for
   * ten classes). Short studies leave every row above the paper's 20% line; this is what still tells them apart.
   */
  learns: boolean | null;
  /** Median test error minus the table's first row's (the original net), in points. */
  vsFirst: number | null;
}

export interface StudyResults {
  table: StudyTable['name'];
  title: string;
  command: string;
  settings: StudySettings;
  network: string;
  source: string;
  rows: RowResult[];
  checks: { text: string; holds: boolean | null }[];
  written: string;
}

function readRun(dir: string, seed: number, iterations: number): RunResult | null {
  const logPath = join(dir, LOG_FILE);
  const st = runState(dir, iterations);
  // A run that diverged before its first logged window has no log, only its record.
  if (!existsSync(logPath) && st.state !== 'diverged') return null;
  const entries: LogEntry[] = existsSync(logPath) ? cutLog(readFileSync(logPath, 'utf8'), Number.MAX_SAFE_INTEGER).entries : [];
  const trainLines = entries.filter((e) => e.type === 'train') as (LogEntry & { loss: number; accuracy: number; elapsedSeconds: number })[];
  const evals = entries.filter((e) => e.type === 'eval') as (LogEntry & { top1Error: number })[];
  // A resumed run logs from its checkpoint again; the last line of each iteration is the one that counts.
  const byIteration = <T extends LogEntry>(xs: T[]): T[] => [...new Map(xs.map((x) => [x.iteration, x])).values()].sort((a, b) => a.iteration - b.iteration);
  const tl = byIteration(trainLines);
  const ev = byIteration(evals);
  const lastTrain = tl.at(-1);
  const lastEval = ev.at(-1);
  const diverged = st.state === 'diverged';
  return {
    seed,
    state: st.state === 'new' && tl.length > 0 ? 'partial' : st.state,
    iteration: diverged ? st.iteration : (lastTrain?.iteration ?? 0),
    trainLoss: diverged ? null : (lastTrain?.loss ?? null),
    trainError: diverged ? null : lastTrain ? 100 - lastTrain.accuracy : null,
    testError: diverged ? null : (lastEval?.top1Error ?? null),
    testIteration: diverged ? null : (lastEval?.iteration ?? null),
    lossCurve: tl.map((e) => [e.iteration, e.loss]),
    testCurve: ev.map((e) => [e.iteration, e.top1Error]),
    seconds: st.state === 'done' && lastTrain ? lastTrain.elapsedSeconds : null,
  };
}

export function median(xs: readonly number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const h = Math.floor(a.length / 2);
  return a.length % 2 ? a[h] : (a[h - 1] + a[h]) / 2;
}

/** The command line that trains one row alone, as `resnet-onnx train` spells it. */
export function trainCommandFor(s: StudySettings, table: StudyTable, row: StudyRow, seed: number): string {
  const a: string[] = ['resnet-onnx train'];
  a.push(s.stages ? `--dataset ${s.dataset} --stages ${s.stages.join(',')} --unit basic` : `--depth ${s.depth} --dataset ${s.dataset}`);
  const activation = row.activation ?? table.activation;
  if (activation !== 'full-preact') a.push(`--variant ${activation}`);
  const sc = row.shortcut;
  if (sc && sc.kind && sc.kind !== 'identity') {
    a.push(`--shortcut ${sc.kind}`);
    if (sc.kind === 'scaling') a.push(`--scale ${sc.scale ?? 0.5}${sc.scaleResidual ? ' --scale-residual' : ''}`);
    if (sc.gateBias !== undefined) a.push(`--gate-bias ${sc.gateBias}`);
    if (sc.kind === 'dropout' && sc.dropout !== undefined) a.push(`--shortcut-dropout ${sc.dropout}`);
  }
  // train's default milestones scale with --iterations; a constant rate is milestones past the end.
  a.push(`--iterations ${s.iterations} --batch ${s.batch} --lr ${s.lr} --milestones ${s.milestones.join(',') || String(s.iterations)} --seed ${seed}`);
  if (s.warmup) a.push(`--warmup --warmup-lr ${s.warmup.lr} --warmup-iterations ${s.warmup.iterations}`);
  a.push(`--eval-every ${s.evalEvery} --log-every ${s.logEvery}`);
  if (s.trainLimit !== null) a.push(`--train-limit ${s.trainLimit}`);
  if (s.testLimit !== null) a.push(`--test-limit ${s.testLimit}`);
  return a.join(' ');
}

/** Reads every row's runs from the study folder (rows without runs are listed as not run). */
export function collectResults(out: string, table: StudyTable, settings: StudySettings, command: string): StudyResults {
  // A small test net (--stages) is set beside the figures of the paper's first depth.
  const depth = settings.depth ?? table.depths[0];
  const chance = 100 * (1 - 1 / baseConfig(settings, table, table.rows[0]).classes);
  const rows: RowResult[] = table.rows.map((row) => {
    const rowDir = join(out, row.id);
    const seeds = existsSync(rowDir) ? ls(rowDir).flatMap((n) => (/^seed(\d+)$/.exec(n) ? [Number(n.slice(4))] : [])).sort((a, b) => a - b) : [];
    const runs = seeds.flatMap((seed) => readRun(join(rowDir, `seed${seed}`), seed, settings.iterations) ?? []);
    const finished = runs.filter((r) => r.state === 'done' || r.state === 'diverged');
    const num = (xs: (number | null)[]): number[] => xs.filter((x): x is number => x !== null);
    // A diverged run counts as the worst: its test error is chance or worse.
    const testErrors = finished.map((r) => (r.state === 'diverged' ? Infinity : r.testError ?? Infinity));
    const losses = finished.map((r) => (r.state === 'diverged' ? Infinity : r.trainLoss ?? Infinity));
    const m = finished.length
      ? {
          trainLoss: finite(median(losses)),
          trainError: num(finished.map((r) => r.trainError)).length === finished.length ? median(num(finished.map((r) => r.trainError))) : null,
          testError: finite(median(testErrors)),
        }
      : null;
    return {
      id: row.id,
      label: row.label,
      ...(row.remark ? { remark: row.remark } : {}),
      paper: row.paper[depth] ?? null,
      trainCommand: trainCommandFor(settings, table, row, 0),
      runs,
      median: m,
      spread: finished.length > 1 ? { testError: [Math.min(...testErrors), Math.max(...testErrors)], trainLoss: [Math.min(...losses), Math.max(...losses)] } : null,
      fails: m ? m.testError === null || m.testError > FAIL_ERROR : null,
      learns: m ? m.testError !== null && m.testError < chance - 10 : null,
      vsFirst: null,
    };
  });
  const base = rows[0].median?.testError ?? null;
  for (const r of rows) r.vsFirst = base !== null && r.median?.testError != null ? r.median.testError - base : null;
  const network = describeNet(settings, table);
  return {
    table: table.name,
    title: table.title,
    command,
    settings,
    network,
    source: table.source,
    rows,
    checks: checksOf(table, rows),
    written: new Date().toISOString(),
  };
}

const finite = (x: number): number | null => (Number.isFinite(x) ? x : null);

function ls(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function describeNet(s: StudySettings, table: StudyTable): string {
  const net = s.stages ? `a CIFAR-family net with ${s.stages.join('-')} basic units per stage` : `ResNet-${s.depth}`;
  return `${net}, ${table.activation === 'original' ? 'original units (f = ReLU after the addition)' : 'identity shortcuts'}, on ${s.dataset}`;
}

/** What the study shows, stated from the numbers (null: not enough rows finished to say). */
function checksOf(table: StudyTable, rows: RowResult[]): { text: string; holds: boolean | null }[] {
  const done = rows.filter((r) => r.median);
  const out: { text: string; holds: boolean | null }[] = [];
  if (table.name === 'table1') {
    const id = rows.find((r) => r.id === 'original');
    const others = done.filter((r) => r.id !== 'original');
    const lowest = (key: 'trainLoss' | 'testError'): boolean | null => {
      if (!id?.median || others.length === 0) return null;
      const mine = id.median[key];
      if (mine === null) return false;
      return others.every((r) => r.median![key] === null || r.median![key]! > mine);
    };
    out.push({ text: `the identity shortcut (original) has the lowest training loss of the ${done.length} rows run`, holds: lowest('trainLoss') });
    out.push({ text: `the identity shortcut (original) has the lowest test error of the ${done.length} rows run`, holds: lowest('testError') });
    const paperFails = done.filter((r) => r.paper === 'fail');
    out.push({
      text: `every row the paper reports as "fail" has not started to learn here (test error within 10 points of chance, or the loss diverged) (${paperFails.map((r) => r.id).join(', ') || 'none run'})`,
      holds: paperFails.length ? paperFails.every((r) => r.learns === false) : null,
    });
    const paperOk = done.filter((r) => typeof r.paper === 'number');
    const slow = paperOk.filter((r) => r.learns === false);
    out.push({
      text: `every row the paper reports as converging learns here${slow.length ? ` (still at chance: ${slow.map((r) => r.id).join(', ')})` : ''}`,
      holds: paperOk.length ? slow.length === 0 : null,
    });
  } else {
    const best = done.filter((r) => r.median?.testError !== null).sort((a, b) => a.median!.testError! - b.median!.testError!)[0];
    out.push({ text: `full pre-activation has the lowest test error of the ${done.length} rows run${best ? ` (lowest here: ${best.id})` : ''}`, holds: best ? best.id === 'full-preact' : null });
  }
  const agree = done.filter((r) => r.paper !== null && (r.paper === 'fail') === r.fails);
  out.push({
    text: `rows on the same side of the paper's ${FAIL_ERROR}% line as in the paper: ${agree.length} of ${done.length}${done.some((r) => r.paper !== 'fail' && r.fails) ? ' (a short study leaves rows the paper trains to convergence above it)' : ''}`,
    holds: done.length ? agree.length === done.length : null,
  });
  // The orders, for the reader to compare (rows the paper reports as fail last, in table order).
  const ranked = done.filter((r) => r.median?.testError != null).sort((a, b) => a.median!.testError! - b.median!.testError!);
  const paperRanked = done.filter((r) => r.paper !== null).sort((a, b) => (a.paper === 'fail' ? 1e9 : (a.paper as number)) - (b.paper === 'fail' ? 1e9 : (b.paper as number)));
  if (ranked.length > 1) {
    const samePlace = ranked.every((r, i) => r.id === paperRanked[i]?.id);
    out.push({ text: `test error from lowest: here ${ranked.map((r) => r.id).join(' < ')}; the paper ${paperRanked.map((r) => r.id).join(' < ')}`, holds: samePlace });
  }
  return out;
}

/** Rewrites results.md, results.json and index.html from the run folders. */
export function writeResults(o: Pick<RunStudyOptions, 'out' | 'table' | 'settings' | 'command'>): StudyResults {
  const r = collectResults(o.out, o.table, o.settings, o.command);
  const put = (name: string, text: string): void => writeFileAtomic(join(o.out, name), (p) => p(new TextEncoder().encode(text)));
  put(RESULTS_JSON, `${JSON.stringify(r, null, 2)}\n`);
  put(RESULTS_MD, studyMarkdown(r));
  put(RESULTS_HTML, studyHtml(r));
  return r;
}

