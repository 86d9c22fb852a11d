// Atomic file writing: everything goes to a temporary file beside the target, which is renamed into place
// only when complete, so an interrupted export or checkpoint never leaves a truncated file. The temporary is
// registered while open (an interrupt removes it, see installInterruptCleanup), and those of killed processes
// for the same target are removed first.

import { closeSync, copyFileSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { discardTemp, removeStaleTemps, tempPathFor, trackTemp, untrackTemp } from '../util/files.js';

export type Put = (bytes: Uint8Array) => void;

/** One event-loop turn, so that signal handlers (and timers) run during a long write. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface Open {
  fd: number;
  tmp: string;
  put: Put;
}

function open(path: string): Open {
  removeStaleTemps(path);
  const tmp = tempPathFor(path);
  let fd: number;
  try {
    fd = openSync(tmp, 'w');
    trackTemp(tmp);
  } catch (e) {
    throw new Error(`cannot write ${path}: ${(e as Error).message.replace(`, open '${tmp}'`, '')}`);
  }
  const put: Put = (bytes) => {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
  };
  return { fd, tmp, put };
}

function commit(path: string, f: Open): void {
  fsyncSync(f.fd);
  closeSync(f.fd);
  f.fd = -1;
  renameSync(f.tmp, path);
  untrackTemp(f.tmp);
}

function abandon(f: Open): void {
  if (f.fd >= 0) closeSync(f.fd);
  discardTemp(f.tmp);
}

export function writeFileAtomic(path: string, write: (put: Put) => void): void {
  const f = open(path);
  try {
    write(f.put);
    commit(path, f);
  } catch (e) {
    abandon(f);
    throw e;
  }
}

/**
 * As writeFileAtomic, for writers that yield to the event loop between pieces (await yieldToEventLoop()), so that
 * an interrupt is handled within a piece instead of after the whole file.
 */
export async function writeFileAtomicAsync(path: string, write: (put: Put) => Promise<void>): Promise<void> {
  const f = open(path);
  try {
    await write(f.put);
    commit(path, f);
  } catch (e) {
    abandon(f);
    throw e;
  }
}

/** Copies `src` to `dest` through a temporary beside it, renamed into place when complete. */
export function copyFileAtomic(src: string, dest: string): void {
  removeStaleTemps(dest);
  const tmp = tempPathFor(dest);
  trackTemp(tmp);
  try {
    copyFileSync(src, tmp);
    renameSync(tmp, dest);
    untrackTemp(tmp);
  } catch (e) {
    discardTemp(tmp);
    throw e;
  }
}
