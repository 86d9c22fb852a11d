// Training checkpoints: every state tensor of the step graph (parameters, momentum buffers, BN running
// statistics) plus where the run stands, in one safetensors file written atomically; and the run's fields under
// the names of the flags that set them, so that a resume can say exactly what differs.

import { CheckpointError, SafeTensorsFile, writeSafeTensors } from '../export/safetensors.js';
import { CHECKPOINT_FORMAT } from '../export/weights.js';
import { type ResNetConfig, configFromJson } from '../models/config.js';

export { MEAN_IMAGE } from '../export/weights.js';

/** How the run was set up beyond its recipe: what `train --resume` alone continues with. */
export interface RunSettings {
  /** Iterations the run is set to train in all (a resume may extend it). */
  iterations: number;
  /** The dataset's folder. */
  data: string;
  evalEvery: number;
  logEvery: number;
  checkpointEvery: number;
  testLimit: number | null;
}

export interface RunState {
  /** Iterations completed. */
  iteration: number;
  seed: number;
  batch: number;
  /** JSON of what must not change on resume (schedule, optimiser, dataset): compared, not trusted blindly. */
  recipe: string;
  /** Absent in checkpoints written before it was recorded. */
  settings?: RunSettings;
}

/** The recipe JSON, parsed (the trainer's `recipeOf` writes it). */
export interface Recipe {
  dataset: string;
  schedule: { lr: number; milestones: number[]; gamma: number; warmup: { lr: number; iterations: number } | null };
  sgd: { momentum: number; weightDecay: number; nesterov: boolean; decayOn: 'all' | 'weights' };
  trainLimit: number | null;
  colour?: { jitter: number; lighting: number };
  normalise?: 'per-pixel';
}

export interface CheckpointInfo {
  path: string;
  cfg: ResNetConfig;
  run: RunState;
  /** The `weights` status, e.g. "trained: ... test top-1 error 7.16%". */
  weights?: string;
}

export interface Checkpoint extends CheckpointInfo {
  tensors: Map<string, Float32Array>;
}

export function saveCheckpoint(path: string, cfg: ResNetConfig, run: RunState, tensors: ReadonlyMap<string, Float32Array>, dims: ReadonlyMap<string, readonly number[]>, weights: string): void {
  writeSafeTensors(
    path,
    [...tensors].map(([name, values]) => ({ name, shape: dims.get(name) ?? [values.length], values: () => values })),
    {
      format: CHECKPOINT_FORMAT,
      config: JSON.stringify(cfg),
      iteration: String(run.iteration),
      seed: String(run.seed),
      batch: String(run.batch),
      recipe: run.recipe,
      ...(run.settings ? { run: JSON.stringify(run.settings) } : {}),
      weights,
    },
  );
}

function infoOf(file: SafeTensorsFile, path: string): CheckpointInfo {
  const meta = file.metadata;
  for (const key of ['config', 'iteration', 'seed', 'batch', 'recipe']) {
    if (meta[key] === undefined) throw new CheckpointError(`${path} is not a training checkpoint of this project: metadata '${key}' is missing`);
  }
  const cfg = configFromJson(meta.config, `${path}: config`);
  const num = (key: string): number => {
    const v = Number(meta[key]);
    if (!Number.isSafeInteger(v) || v < 0) throw new CheckpointError(`${path}: metadata '${key}' must be a non-negative integer, got '${meta[key]}'`);
    return v;
  };
  const run: RunState = { iteration: num('iteration'), seed: num('seed'), batch: num('batch'), recipe: meta.recipe };
  if (meta.run !== undefined) run.settings = parseSettings(meta.run, path);
  return { path, cfg, run, ...(meta.weights !== undefined ? { weights: meta.weights } : {}) };
}

function parseSettings(text: string, path: string): RunSettings {
  const bad = (why: string): never => {
    throw new CheckpointError(`${path}: metadata 'run' ${why}`);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    bad('is not JSON');
  }
  const r = raw as Record<string, unknown>;
  if (typeof r !== 'object' || r === null) bad('is not a JSON object');
  const count = (k: string, min: number): number => {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) bad(`field '${k}' must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  if (typeof r.data !== 'string') bad(`field 'data' must be a string, got ${JSON.stringify(r.data)}`);
  return {
    iterations: count('iterations', 1),
    data: r.data as string,
    evalEvery: count('evalEvery', 0),
    logEvery: count('logEvery', 1),
    checkpointEvery: count('checkpointEvery', 0),
    testLimit: r.testLimit === null || r.testLimit === undefined ? null : count('testLimit', 1),
  };
}

/** The checkpoint's configuration and run state, without reading its tensors. */
export function readCheckpointInfo(path: string): CheckpointInfo {
  const file = SafeTensorsFile.open(path);
  try {
    return infoOf(file, path);
  } finally {
    file.close();
  }
}

export function loadCheckpoint(path: string): Checkpoint {
  const file = SafeTensorsFile.open(path);
  try {
    const info = infoOf(file, path);
    const tensors = new Map<string, Float32Array>();
    for (const name of file.tensors.keys()) tensors.set(name, file.readFloat32(name));
    return { ...info, tensors };
  } finally {
    file.close();
  }
}

/** The recipe of a checkpoint as data; undefined when its JSON is not of the shape this version writes. */
export function parseRecipe(text: string): Recipe | undefined {
  let r: Recipe;
  try {
    r = JSON.parse(text) as Recipe;
  } catch {
    return undefined;
  }
  const s = r?.schedule;
  const o = r?.sgd;
  const ok =
    typeof r === 'object' &&
    typeof r.dataset === 'string' &&
    typeof s === 'object' &&
    s !== null &&
    typeof s.lr === 'number' &&
    Array.isArray(s.milestones) &&
    s.milestones.every((m) => typeof m === 'number') &&
    typeof s.gamma === 'number' &&
    (s.warmup === null || (typeof s.warmup === 'object' && typeof s.warmup.lr === 'number' && typeof s.warmup.iterations === 'number')) &&
    typeof o === 'object' &&
    o !== null &&
    typeof o.momentum === 'number' &&
    typeof o.weightDecay === 'number' &&
    typeof o.nesterov === 'boolean' &&
    (o.decayOn === 'all' || o.decayOn === 'weights') &&
    (r.trainLimit === null || typeof r.trainLimit === 'number') &&
    (r.colour === undefined || (typeof r.colour.jitter === 'number' && typeof r.colour.lighting === 'number')) &&
    (r.normalise === undefined || r.normalise === 'per-pixel');
  return ok ? r : undefined;
}

// Values as a user types them, so that a message reads "--stages 1,1,1", "--nesterov off".
export const flagText = {
  list: (v: readonly number[]): string => (v.length ? v.join(',') : 'none'),
  bool: (v: boolean): string => (v ? 'on' : 'off'),
  num: (v: number): string => String(v),
};

/**
 * The architecture under the names of the flags that choose it (`--depth`, `--stages`, `--variant`, ...), values
 * as typed. Two configs with equal fields here build the same network.
 */
export function architectureFields(cfg: ResNetConfig): Map<string, string> {
  const m = new Map<string, string>([
    ['--depth', cfg.depth === null ? 'none (custom --stages)' : String(cfg.depth)],
    ['--stages', flagText.list(cfg.stages.map((s) => s.units))],
    ['--dataset', cfg.dataset],
    ['--classes', String(cfg.classes)],
    ['--unit', cfg.unit],
    ['--variant', cfg.activation],
    ['--shortcut', cfg.shortcut.kind],
    ['--scale', flagText.num(cfg.shortcut.scale)],
    ['--scale-residual', flagText.bool(cfg.shortcut.scaleResidual)],
    ['--gate-bias', flagText.num(cfg.shortcut.gateBias)],
    ['--shortcut-dropout', flagText.num(cfg.shortcut.dropout)],
    ['--projection', cfg.projection],
    ['input channels', String(cfg.inChannels)],
  ]);
  m.set('layout', cfg.layout ? JSON.stringify(cfg.layout) : 'none');
  return m;
}

/** The recipe, seed and batch size under the names of their flags, values as typed. */
export function recipeFields(r: Recipe, seed: number, batch: number): Map<string, string> {
  const s = r.schedule;
  const m = new Map<string, string>([
    ['--dataset', r.dataset],
    ['--seed', String(seed)],
    ['--batch', String(batch)],
    ['--lr', flagText.num(s.lr)],
    ['--milestones', flagText.list(s.milestones)],
    ['--gamma', flagText.num(s.gamma)],
    ['--warmup', flagText.bool(s.warmup !== null)],
  ]);
  if (s.warmup) {
    m.set('--warmup-lr', flagText.num(s.warmup.lr));
    m.set('--warmup-iterations', String(s.warmup.iterations));
  }
  m.set('--momentum', flagText.num(r.sgd.momentum));
  m.set('--weight-decay', flagText.num(r.sgd.weightDecay));
  m.set('--nesterov', flagText.bool(r.sgd.nesterov));
  m.set('--decay-on', r.sgd.decayOn);
  m.set('--train-limit', r.trainLimit === null ? 'none (all images)' : String(r.trainLimit));
  if (r.dataset === 'imagenet') {
    m.set('--colour-jitter', flagText.num(r.colour?.jitter ?? 0));
    m.set('--lighting', flagText.num(r.colour?.lighting ?? 0));
  }
  m.set('--normalise', r.normalise ?? 'per-channel');
  return m;
}

export interface FieldDifference {
  /** The flag (or field) that differs, e.g. `--depth`. */
  field: string;
  given: string;
  checkpoint: string;
}

/**
 * Fields of `given` whose value differs from the checkpoint's. A field only one side has is not compared: it
 * exists only where another field that is compared already differs (`--warmup-lr` only with `--warmup` on).
 */
export function differences(given: ReadonlyMap<string, string>, checkpoint: ReadonlyMap<string, string>): FieldDifference[] {
  const out: FieldDifference[] = [];
  for (const [field, v] of given) {
    const c = checkpoint.get(field);
    if (c !== undefined && c !== v) out.push({ field, given: v, checkpoint: c });
  }
  return out;
}

/** "--depth 32 (the checkpoint's: 20); --lr 0.05 (the checkpoint's: 0.1)". */
export function describeDifferences(d: readonly FieldDifference[]): string {
  return d.map((x) => `${x.field} ${x.given} (the checkpoint's: ${x.checkpoint})`).join('; ');
}
