// Atomic file writing: everything goes to a temporary file beside the target, which is renamed into place
// only when complete, so an interrupted export or checkpoint never leaves a truncated file.

import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';

export type Put = (bytes: Uint8Array) => void;

export function writeFileAtomic(path: string, write: (put: Put) => void): void {
  const tmp = `${path}.${process.pid}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, 'w');
  } catch (e) {
    throw new Error(`cannot write ${path}: ${(e as Error).message.replace(`, open '${tmp}'`, '')}`);
  }
  try {
    write((bytes) => {
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    });
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing to remove */
    }
    throw e;
  }
}
