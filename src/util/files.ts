// A user's files are sacred: outputs that exist are refused unless the user asks to replace them, inputs are
// checked for kind (file or folder) before any work, and temporaries are removed on an interrupt or by the next
// run that writes the same output.

import { createHash } from 'node:crypto';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';
import { isMainThread } from 'node:worker_threads';

/** The request names a path that cannot be used as asked (exists, wrong kind, missing input): exit 2. */
export class PathError extends Error {
  override name = 'PathError';
}

function kindOf(path: string): 'file' | 'folder' | 'other' | undefined {
  let s;
  try {
    s = statSync(path);
  } catch {
    return undefined;
  }
  return s.isFile() ? 'file' : s.isDirectory() ? 'folder' : 'other';
}

function sizeOf(path: string): string {
  const bytes = statSync(path).size;
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : bytes >= 1e3 ? `${(bytes / 1e3).toFixed(1)} kB` : `${bytes} bytes`;
}

export interface OutputCheck {
  /** The flag that named the path, for messages (e.g. `-o`, `--save-weights`); omitted for a default path. */
  flag?: string;
  /** Replace an existing file (the user passed --force). */
  force?: boolean;
  /** Create the parent folder when missing (only for default paths, never for a path the user typed). */
  createParent?: boolean;
}

/**
 * Checks, before any work, that `path` can receive a new file: not a folder, not an existing file unless forced,
 * its parent folder present. Also removes temporaries of `path` left by killed processes.
 */
export function checkOutputFile(path: string, o: OutputCheck = {}): void {
  const named = o.flag ? `${o.flag} ${path}` : path;
  const kind = kindOf(path);
  if (kind === 'folder' || (kind === undefined && (path.endsWith('/') || path.endsWith(sep))))
    throw new PathError(`${named} is a folder; give a file path (e.g. ${join(path, basename(path) || 'model')}.onnx)`);
  if (kind === 'other') throw new PathError(`${named} is not a regular file`);
  if (kind === 'file' && !o.force) throw new PathError(`${named} already exists (${sizeOf(path)}); pass --force to replace it, or choose another path`);
  const parent = dirname(path) || '.';
  const parentKind = kindOf(parent);
  if (parentKind === undefined) {
    if (!o.createParent) throw new Error(`cannot write ${path}: folder ${parent} does not exist`);
    mkdirSync(parent, { recursive: true });
    return;
  }
  if (parentKind !== 'folder') throw new PathError(`cannot write ${path}: ${parent} is not a folder`);
  try {
    accessSync(parent, constants.W_OK);
  } catch {
    throw new Error(`cannot write ${path}: folder ${parent} is not writable`);
  }
  removeStaleTemps(path);
}

/** An input that must be an existing file (not a folder). */
export function checkInputFile(path: string, flag: string): void {
  const kind = kindOf(path);
  if (kind === undefined) throw new PathError(`${flag} ${path}: no such file`);
  if (kind === 'folder') throw new PathError(`${flag} ${path} is a folder; give a file`);
}

/** An input that must be an existing folder (not a file). */
export function checkInputFolder(path: string, flag: string): void {
  const kind = kindOf(path);
  if (kind === undefined) throw new PathError(`${flag} ${path}: no such folder`);
  if (kind !== 'folder') throw new PathError(`${flag} ${path} is a file; give a folder`);
}

// Temporaries: `<path>.<pid>.tmp` beside the target, registered while open so that an interrupt removes them.
const live = new Set<string>();

export function tempPathFor(path: string): string {
  return `${path}.${process.pid}.tmp`;
}

export function trackTemp(tmp: string): void {
  live.add(tmp);
}

export function untrackTemp(tmp: string): void {
  live.delete(tmp);
}

/** Removes an abandoned temporary (if it is there) and stops tracking it. */
export function discardTemp(tmp: string): void {
  try {
    unlinkSync(tmp);
  } catch {
    /* nothing to remove */
  }
  untrackTemp(tmp);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `<path>.<pid>.tmp` files whose process is gone (killed with -9, power cut); returns what it removed. */
export function removeStaleTemps(path: string): string[] {
  const dir = dirname(path) || '.';
  const prefix = `${basename(path)}.`;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const pid = name.slice(prefix.length, -'.tmp'.length);
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid || alive(Number(pid))) continue;
    try {
      unlinkSync(join(dir, name));
      removed.push(join(dir, name));
    } catch {
      /* already gone */
    }
  }
  return removed;
}

/** Removes every temporary this process has open; safe to call from a signal handler or on exit. */
export function removeLiveTemps(): string[] {
  const removed: string[] = [];
  for (const tmp of live) {
    try {
      if (existsSync(tmp)) {
        unlinkSync(tmp);
        removed.push(tmp);
      }
    } catch {
      /* nothing to do */
    }
  }
  live.clear();
  return removed;
}

let handlers: [NodeJS.Signals, () => void][] = [];
let releasing: NodeJS.Timeout | undefined;

/**
 * Makes SIGINT and SIGTERM remove this process's live temporaries, say so on stderr and exit 130 / 143 (128 +
 * the signal's number, as a shell reports a process killed by it). The CLI calls it for every command but
 * `serve` (which drains instead) and releases it when the command ends. JS handlers run between event-loop turns:
 * the *Async writers yield between tensors, so an interrupt stops them within one; a synchronous write finishes
 * first, and then no temporary is left either.
 */
export function installInterruptCleanup(): void {
  clearTimeout(releasing);
  releasing = undefined;
  if (handlers.length || !isMainThread) return;
  const codes = { SIGINT: 130, SIGTERM: 143 } as const;
  for (const [signal, code] of Object.entries(codes) as [NodeJS.Signals, number][]) {
    const handler = (): void => {
      const removed = removeLiveTemps();
      process.stderr.write(removed.length ? removed.map((t) => `interrupted: removed ${t}\n`).join('') : `interrupted (${signal})\n`);
      process.exit(code);
    };
    process.on(signal, handler);
    handlers.push([signal, handler]);
  }
}

/**
 * Restores the default signal behaviour once the command is over (for a process that runs more than one, e.g. the
 * tests). Not at once: a signal that arrived during a synchronous write is delivered only after it, and removing
 * the handlers first would drop it (the command would exit 0 as if never interrupted).
 */
export function releaseInterruptCleanup(): void {
  if (!handlers.length || releasing) return;
  releasing = setTimeout(() => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
    handlers = [];
    releasing = undefined;
  }, 200).unref();
}

/** The sha256 (hex) of a file, read in 4 MiB pieces. */
export function sha256File(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 22);
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}
