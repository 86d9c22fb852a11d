// Run folders: what a training run's folder holds, said in words; a folder that holds anything is not trained
// into unless the user asks (`--resume` continues the run, `--force` starts over); default folders take the next
// free name instead.

import { existsSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PathError, removeStaleTemps } from '../util/files.js';
import { readCheckpointInfo } from './checkpoint.js';

export const CHECKPOINT_FILE = 'checkpoint.safetensors';
export const LOG_FILE = 'log.jsonl';
export const MODEL_FILE = 'model.onnx';
export const CURVES_FILE = 'curves.html';
/** What a run writes into its folder; `--force` replaces these and nothing else. */
export const RUN_FILES = [CHECKPOINT_FILE, LOG_FILE, MODEL_FILE, CURVES_FILE] as const;

/** The folder's entries, stale temporaries of killed runs removed first; undefined when there is no such folder. */
function entries(dir: string): string[] | undefined {
  let s;
  try {
    s = statSync(dir);
  } catch {
    return undefined;
  }
  if (!s.isDirectory()) throw new PathError(`${dir} is a file; the run's outputs need a folder: give another --out`);
  for (const f of RUN_FILES) removeStaleTemps(join(dir, f));
  return readdirSync(dir);
}

/** Missing, or an empty folder. */
export function isFreeFolder(dir: string): boolean {
  const e = entries(dir);
  return e === undefined || e.length === 0;
}

/** `base`, else `base-2`, `base-3`, ...: the first that is free. */
export function nextFreeFolder(base: string): string {
  if (isFreeFolder(base)) return base;
  for (let k = 2; ; k++) if (isFreeFolder(`${base}-${k}`)) return `${base}-${k}`;
}

/** "checkpoint at iteration 400 of 1000", or why it cannot be read. */
export function describeCheckpoint(path: string): string {
  try {
    const { run } = readCheckpointInfo(path);
    const of = run.settings ? ` of ${run.settings.iterations}${run.iteration >= run.settings.iterations ? ' (finished)' : ''}` : '';
    return `checkpoint at iteration ${run.iteration}${of}`;
  } catch (e) {
    return `${CHECKPOINT_FILE} (unreadable: ${(e as Error).message})`;
  }
}

function listed(names: string[], max = 4): string {
  const shown = names.slice(0, max);
  return names.length > max ? `${shown.join(', ')} and ${names.length - max} more` : shown.join(', ');
}

/**
 * Refuses to start a run in `dir` when it holds anything, unless `force`; the message says what is there and
 * the ways on. `named` is how the user gave it (e.g. `--out runs/x`); `resumedFrom` is the folder of the
 * checkpoint when a resumed run is to continue in `dir` instead (then only a new or empty folder will do).
 */
export function checkRunFolder(dir: string, force: boolean, named = dir, resumedFrom?: string): void {
  const e = entries(dir);
  if (e === undefined || e.length === 0 || force) return;
  if (resumedFrom !== undefined)
    throw new PathError(`${named} is not empty (it holds ${listed(e)}); a resumed run continues in its own folder (leave out --out: ${resumedFrom}) or in a new or empty one`);
  const runFiles = RUN_FILES.filter((f) => e.includes(f));
  const others = e.filter((f) => !(RUN_FILES as readonly string[]).includes(f));
  if (runFiles.length > 0) {
    const what = runFiles.map((f) => (f === CHECKPOINT_FILE ? describeCheckpoint(join(dir, f)) : f));
    if (others.length) what.push(`${others.length} other file${others.length > 1 ? 's' : ''}`);
    const resume = e.includes(CHECKPOINT_FILE) ? `To continue (or extend) it: resnet-onnx train --resume ${dir}. ` : '';
    throw new PathError(`${named} holds a run: ${what.join(', ')}. ${resume}To start over, replacing its ${runFiles.join(', ')}: add --force. Or give another --out`);
  }
  throw new PathError(`${named} is not empty (it holds ${listed(others)}); a run writes ${RUN_FILES.join(', ')} there: give a new or empty folder, or add --force to write beside what is there`);
}

/** Removes the files of a run from `dir` (only those), for `--force`. */
export function clearRun(dir: string): string[] {
  const removed: string[] = [];
  for (const f of RUN_FILES) {
    const p = join(dir, f);
    if (existsSync(p)) {
      unlinkSync(p);
      removed.push(p);
    }
  }
  return removed;
}

/** One line of log.jsonl: `type` (train, eval, checkpoint, resume) and the iteration it belongs to. */
export interface LogEntry {
  type: string;
  iteration: number;
  [field: string]: unknown;
}

/**
 * log.jsonl cut back to `iteration`: the lines of iterations up to it, in order, as text and parsed. Lines past it
 * (written after the checkpoint by the process that died) and lines that do not parse (a line cut short by a
 * kill) are dropped and counted.
 */
export function cutLog(text: string, iteration: number): { lines: string[]; entries: LogEntry[]; dropped: number } {
  const lines: string[] = [];
  const entries: LogEntry[] = [];
  let dropped = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let e: LogEntry | undefined;
    try {
      const v = JSON.parse(line) as unknown;
      if (typeof v === 'object' && v !== null && typeof (v as LogEntry).type === 'string' && typeof (v as LogEntry).iteration === 'number') e = v as LogEntry;
    } catch {
      /* a partial line */
    }
    if (!e || e.iteration > iteration) {
      dropped++;
      continue;
    }
    lines.push(line);
    entries.push(e);
  }
  return { lines, entries, dropped };
}
