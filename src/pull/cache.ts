// The download cache of `pull`: $RESNET_ONNX_CACHE, else $XDG_CACHE_HOME/resnet-onnx, else ~/.cache/resnet-onnx.
// Each entry is the file as published (`<cache>/<name>/<file name of the URL>`) and a sidecar JSON beside it
// (`<file>.json`: where it came from, its size and sha256, and the models imported from it). A file counts as
// cached only when its sidecar exists and its size matches; the sidecar is written after the file is in place, so
// an interrupted download (whose bytes live in a removed `<file>.<pid>.tmp`) never looks complete.

import { existsSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { CatalogueEntry, PulledFormat } from './catalogue.js';

export interface CacheLocation {
  /** --cache-dir; else the environment decides. */
  cacheDir?: string;
  env?: Readonly<Record<string, string | undefined>>;
}

export function cacheDir(o: CacheLocation = {}): string {
  const env = o.env ?? process.env;
  if (o.cacheDir) return resolve(o.cacheDir);
  if (env.RESNET_ONNX_CACHE) return resolve(env.RESNET_ONNX_CACHE);
  const base = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.trim() ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return resolve(base, 'resnet-onnx');
}

/** What the sidecar records about a cached file. */
export interface CacheRecord {
  name: string;
  /** The catalogue's URL. */
  url: string;
  /** Where the bytes actually came from: the URL after mirror rewriting and redirects, or `file:` + the --file path. */
  fetchedFrom: string;
  format: PulledFormat;
  bytes: number;
  sha256: string;
  /** ISO time of the download. */
  at: string;
  /** ONNX models written from this file: absolute path -> size and mtime when written (to recognise them later). */
  models: Record<string, { bytes: number; mtimeMs: number }>;
}

export function cachedFilePath(entry: CatalogueEntry, dir: string): string {
  const file = basename(new URL(entry.url).pathname) || 'download';
  return join(dir, ...entry.name.split('/'), file);
}

const sidecarOf = (file: string): string => `${file}.json`;

/** The cached file of `entry` and its record, when both are there and agree on the size; else undefined. */
export function readCached(entry: CatalogueEntry, dir: string): { file: string; record: CacheRecord } | undefined {
  const file = cachedFilePath(entry, dir);
  let record: CacheRecord;
  try {
    record = JSON.parse(readFileSync(sidecarOf(file), 'utf8')) as CacheRecord;
  } catch {
    return undefined;
  }
  if (typeof record?.sha256 !== 'string' || typeof record.bytes !== 'number') return undefined;
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return undefined;
  }
  if (size !== record.bytes) return undefined;
  record.models ??= {};
  return { file, record };
}

export function writeRecord(file: string, record: CacheRecord): void {
  const side = sidecarOf(file);
  const tmp = `${side}.${process.pid}.tmp`;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`);
  renameSync(tmp, side);
}

/** Remembers that `model` was written from the cached `file` (so `cachedModelPath` can recognise it). */
export function recordModel(file: string, record: CacheRecord, model: string): void {
  const s = statSync(model);
  record.models[resolve(model)] = { bytes: s.size, mtimeMs: s.mtimeMs };
  writeRecord(file, record);
}

/** True when `model` is a file this cache entry wrote and nobody has replaced since. */
export function isRecordedModel(record: CacheRecord, model: string): boolean {
  const m = record.models[resolve(model)];
  if (!m || !existsSync(model)) return false;
  const s = statSync(model);
  return s.size === m.bytes && s.mtimeMs === m.mtimeMs;
}

/** Removes a cached file and its record (a file that failed to import, or whose hash is wrong). */
export function removeCached(file: string): void {
  for (const p of [file, sidecarOf(file)]) {
    try {
      unlinkSync(p);
    } catch {
      /* not there */
    }
  }
}
