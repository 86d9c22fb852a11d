// `pull`: a catalogue name -> the published file (downloaded into the cache once, or taken from --file) ->
// checked (size, sha256 pin) -> imported with the existing importers -> an ONNX model whose `weights` metadata
// names the source URL, the sha256 and the publisher's accuracy. `ensurePulled` is the same for `serve
// --pretrained`; `cachedModelPath` answers without network or work whether a pulled model is ready.

import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type Imported, exportImported, importModel } from '../import/index.js';
import { describe } from '../models/config.js';
import type { ImportReport } from '../import/imported.js';
import { checkInputFile, checkOutputFile, discardTemp, removeStaleTemps, sha256File, tempPathFor, trackTemp, untrackTemp } from '../util/files.js';
import { modelsDir } from '../util/paths.js';
import { CATALOGUE, type CatalogueEntry, type PulledFormat, REFUSED, type ReportedAccuracy } from './catalogue.js';
import { type CacheRecord, cacheDir, cachedFilePath, isRecordedModel, readCached, recordModel, removeCached, writeRecord } from './cache.js';
import { type DownloadOptions, IntegrityError, download, formatBytes } from './download.js';

export { CATALOGUE, REFUSED, type CatalogueEntry, type ReportedAccuracy } from './catalogue.js';
export { cacheDir } from './cache.js';
export { DownloadError, IntegrityError, type DownloadProgress, download, proxyFor } from './download.js';

/** The request cannot be served as asked (unknown or refused name, malformed --sha256 or --mirror, bad --file): exit 2. */
export class PullRequestError extends Error {
  override name = 'PullRequestError';
}

/** Pulling failed (the file did not import, is not the catalogue's network, or is not cached with --offline): exit 1. */
export class PullError extends Error {
  override name = 'PullError';
}

/** The ONNX metadata key holding the pull record as JSON (name, url, sha256, reported accuracy ...). */
export const PRETRAINED_KEY = 'pretrained';

type Env = Readonly<Record<string, string | undefined>>;

export interface CatalogueOptions {
  /** Entries to use instead of the built-in catalogue (tests, embedding). */
  catalogue?: readonly CatalogueEntry[];
  /** Where RESNET_ONNX_CATALOGUE, RESNET_ONNX_MIRROR, RESNET_ONNX_CACHE, XDG_CACHE_HOME and the proxies are read (default process.env). */
  env?: Env;
}

export interface PullOptions extends CatalogueOptions {
  /** --cache-dir. */
  cacheDir?: string;
  /** --mirror BASE (else RESNET_ONNX_MIRROR): replaces scheme and host of the catalogue URL, keeping the path. */
  mirror?: string;
  /** The ONNX model to write (default: models/<name without timm/>.onnx in the package's models folder). */
  output?: string;
  /** Replace an existing output. */
  force?: boolean;
  /** An already-downloaded file to use instead of the network (--file); copied into the cache. */
  file?: string;
  /** Pin: the sha256 (hex) the file must have. */
  sha256?: string;
  /** Never download: fail unless the file is cached (what `npm start` does). */
  offline?: boolean;
  /** Timeouts, retries, progress and notes of the download. */
  download?: Pick<DownloadOptions, 'timeoutMs' | 'retries' | 'retryDelayMs' | 'onProgress' | 'log' | 'signal'>;
  /** Notes for the user beyond the download's (reusing the cache, hashing, importing). */
  log?: (message: string) => void;
  /** How the model is written, as for `import`. */
  fold?: boolean;
  opset?: number;
  probabilities?: boolean;
  importProgress?: (written: number, total: number) => void;
}

export interface PullResult {
  entry: CatalogueEntry;
  /** The ONNX model written. */
  model: string;
  /** The published file, in the cache. */
  file: string;
  bytes: number;
  sha256: string;
  /** Where the bytes came from: a URL (after mirror and redirects) or `file:<path>`. */
  fetchedFrom: string;
  /** How the file was obtained this time. */
  obtained: 'downloaded' | 'cache' | 'file';
  report: ImportReport;
  /** The importer's notes (what was adapted). */
  notes: string[];
  /** The model's `weights` metadata. */
  weights: string;
  /** The network, in words (`pre-act ResNet-200 (ImageNet, 1000 classes, fb.resnet.torch layout)`). */
  network: string;
}

// ---------------------------------------------------------------------------------------------------------
// The catalogue and names

const FORMATS: readonly PulledFormat[] = ['t7', 'timm-safetensors'];

/** The built-in catalogue, plus (replacing same-named entries) those of the JSON file RESNET_ONNX_CATALOGUE names. */
export function catalogue(o: CatalogueOptions = {}): readonly CatalogueEntry[] {
  if (o.catalogue) return o.catalogue;
  const path = (o.env ?? process.env).RESNET_ONNX_CATALOGUE;
  if (!path) return CATALOGUE;
  let extra: unknown;
  try {
    extra = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new PullRequestError(`RESNET_ONNX_CATALOGUE=${path}: cannot read it as JSON: ${(e as Error).message}`);
  }
  const list = Array.isArray(extra) ? extra : [extra];
  const entries = list.map((x, i) => siteEntry(x, `RESNET_ONNX_CATALOGUE=${path}: entry ${i}`));
  const names = new Set(entries.map((e) => e.name.toLowerCase()));
  return [...CATALOGUE.filter((e) => !names.has(e.name.toLowerCase())), ...entries];
}

/** A site catalogue entry, checked: name, url and format are required; the rest as in the built-in catalogue. */
function siteEntry(x: unknown, where: string): CatalogueEntry {
  const e = x as Partial<CatalogueEntry>;
  const fail = (m: string): never => {
    throw new PullRequestError(`${where}: ${m}`);
  };
  if (typeof e !== 'object' || e === null) fail('should be an object with name, url and format');
  if (typeof e.name !== 'string' || !e.name) fail("needs a 'name'");
  if (typeof e.url !== 'string' || !/^https?:\/\//.test(e.url)) fail("needs an http(s) 'url'");
  if (!FORMATS.includes(e.format as PulledFormat)) fail(`'format' must be one of ${FORMATS.join(', ')}`);
  if (e.bytes !== undefined && !(Number.isSafeInteger(e.bytes) && e.bytes > 0)) fail("'bytes' must be a positive integer");
  if (e.aliases !== undefined && (!Array.isArray(e.aliases) || e.aliases.some((a) => typeof a !== 'string'))) fail("'aliases' must be a list of names");
  return {
    name: e.name!,
    aliases: e.aliases ?? [],
    title: e.title ?? e.name!,
    url: e.url!,
    format: e.format!,
    licence: e.licence ?? 'not stated',
    bytes: e.bytes,
    approxMB: e.approxMB,
    depth: e.depth,
    preprocessing: e.preprocessing ?? '',
    reported: Array.isArray(e.reported) ? e.reported : [],
  };
}

const norm = (s: string): string => s.trim().toLowerCase();

/** The entry a name (or alias, any case, timm names with or without `timm/`) means; refused and unknown names throw. */
export function findEntry(name: string, o: CatalogueOptions = {}): CatalogueEntry {
  const entries = catalogue(o);
  const n = norm(name);
  const hit = entries.find((e) => [e.name, ...e.aliases].some((a) => norm(a) === n || norm(a) === `timm/${n}` || `timm/${norm(a)}` === n));
  if (hit) return hit;
  const refused = REFUSED.find((r) => r.names.includes(n));
  if (refused) throw new PullRequestError(`${name}: ${refused.reason}.${refused.instead ? ` A pre-activation network of that size: ${refused.instead}.` : ''}`);
  throw new PullRequestError(`unknown model '${name}'; the catalogue has: ${entries.map((e) => e.name).join(', ')} (see pull --list)`);
}

/** `url` with scheme and host replaced by the mirror `base` (its own path, if any, prefixed): BASE/<path>. */
export function mirroredUrl(url: string, base: string): string {
  let b: URL;
  try {
    b = new URL(base);
  } catch {
    throw new PullRequestError(`mirror '${base}' is not a URL; give e.g. http://mirror.example:8080 or https://host/models`);
  }
  if (b.protocol !== 'http:' && b.protocol !== 'https:') throw new PullRequestError(`mirror '${base}' must be an http:// or https:// URL`);
  const u = new URL(url);
  return `${base.replace(/\/+$/, '')}${u.pathname}${u.search}`;
}

/** --mirror, else RESNET_ONNX_MIRROR, else (for Hugging Face URLs) HF_ENDPOINT, the hub's own mirror variable. */
function mirrorOf(entry: CatalogueEntry, o: PullOptions): string | undefined {
  const env = o.env ?? process.env;
  const hf = new URL(entry.url).host === 'huggingface.co' ? env.HF_ENDPOINT : undefined;
  const m = o.mirror ?? env.RESNET_ONNX_MIRROR ?? hf;
  return m && m.trim() ? m.trim() : undefined;
}

/** The file a pulled model is written to by default: <package>/models/<name without 'timm/'>.onnx. */
export function defaultModelPath(entry: CatalogueEntry): string {
  return join(modelsDir(), `${entry.name.replace(/^timm\//, '').replace(/\//g, '-')}.onnx`);
}

function checkSha(hex: string | undefined): string | undefined {
  if (hex === undefined) return undefined;
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new PullRequestError(`--sha256 must be 64 hexadecimal digits, got '${hex}' (${hex.length} characters)`);
  return hex.toLowerCase();
}

export function describeReported(r: readonly ReportedAccuracy[]): string {
  return r.map((a) => `top-1 ${a.top1}%${a.top5 !== undefined ? ` / top-5 ${a.top5}%` : ''} at ${a.resolution} (crop ${a.crop})`).join(', ');
}

// ---------------------------------------------------------------------------------------------------------
// Getting the file


/** Copies a user's file into the cache (atomically), hashing it on the way. */
function copyIntoCache(src: string, dest: string): { bytes: number; sha256: string } {
  const tmp = tempPathFor(dest);
  removeStaleTemps(dest);
  const h = createHash('sha256');
  const input = openSync(src, 'r');
  const out = openSync(tmp, 'w');
  trackTemp(tmp);
  let bytes = 0;
  try {
    const buf = Buffer.alloc(1 << 22);
    for (;;) {
      const n = readSync(input, buf, 0, buf.length, bytes);
      if (n === 0) break;
      writeSync(out, buf, 0, n, bytes);
      h.update(buf.subarray(0, n));
      bytes += n;
    }
    fsyncSync(out);
    closeSync(out);
    renameSync(tmp, dest);
  } catch (e) {
    try {
      closeSync(out);
    } catch {
      /* closed */
    }
    discardTemp(tmp);
    throw e;
  } finally {
    untrackTemp(tmp);
    closeSync(input);
  }
  return { bytes, sha256: h.digest('hex') };
}

interface Obtained {
  file: string;
  record: CacheRecord;
  obtained: PullResult['obtained'];
}

async function obtain(entry: CatalogueEntry, o: PullOptions, pin: string | undefined): Promise<Obtained> {
  const log = o.log ?? (() => {});
  const dir = cacheDir({ cacheDir: o.cacheDir, env: o.env });
  const file = cachedFilePath(entry, dir);
  const base = { name: entry.name, url: entry.url, format: entry.format, models: {} };

  if (o.file !== undefined) {
    checkInputFile(o.file, '--file');
    const size = statSync(o.file).size;
    if (entry.bytes !== undefined && size !== entry.bytes)
      throw new PullRequestError(`--file ${o.file} has ${size} bytes; the catalogue's ${entry.name} has ${entry.bytes}: not the published file`);
    mkdirSync(dirname(file), { recursive: true });
    removeCached(file);
    const { bytes, sha256 } = copyIntoCache(o.file, file);
    if (pin && sha256 !== pin) {
      removeCached(file);
      throw new IntegrityError(`--file ${o.file}: sha256 mismatch: expected ${pin} (--sha256), got ${sha256}; its copy in the cache has been deleted (your file is kept)`);
    }
    const record: CacheRecord = { ...base, fetchedFrom: `file:${resolve(o.file)}`, bytes, sha256, at: new Date().toISOString() };
    writeRecord(file, record);
    log(`copied ${o.file} into the cache: ${file} (${formatBytes(bytes)}, sha256 ${sha256})`);
    return { file, record, obtained: 'file' };
  }

  const cached = readCached(entry, dir);
  if (cached) {
    // Re-hash: a cached file that changed on disk is not used, and a pin is checked against the bytes.
    const sha = sha256File(cached.file);
    if (sha === cached.record.sha256 && (entry.bytes === undefined || cached.record.bytes === entry.bytes)) {
      if (pin && sha !== pin) {
        removeCached(cached.file);
        throw new IntegrityError(`${cached.file}: sha256 mismatch: expected ${pin} (--sha256), got ${sha}; the cached file has been deleted`);
      }
      log(`using the cached ${cached.file} (${formatBytes(cached.record.bytes)}, sha256 ${sha})`);
      return { ...cached, obtained: 'cache' };
    }
    log(`the cached ${cached.file} does not match its record (sha256 ${sha}, recorded ${cached.record.sha256}): fetching it again`);
    removeCached(cached.file);
  }
  if (o.offline) throw new PullError(`${entry.name} is not in the cache (${dir}); fetch it with: npx resnet-onnx pull ${entry.name}`);

  const mirror = mirrorOf(entry, o);
  const url = mirror ? mirroredUrl(entry.url, mirror) : entry.url;
  mkdirSync(dirname(file), { recursive: true });
  removeCached(file);
  log(`downloading ${url}${mirror ? ` (mirror of ${entry.url})` : ''} -> ${file}`);
  const d = await download(url, file, { ...o.download, env: o.env, expectedBytes: entry.bytes, sha256: pin });
  const record: CacheRecord = { ...base, fetchedFrom: d.finalUrl, bytes: d.bytes, sha256: d.sha256, at: new Date().toISOString() };
  writeRecord(file, record);
  return { file, record, obtained: 'downloaded' };
}

// ---------------------------------------------------------------------------------------------------------
// Importing

/** The model's `weights` metadata: what it is, where from, its hash, and what its publisher reports. */
export function pulledWeights(entry: CatalogueEntry, sha256: string): string {
  const reported = entry.reported.length ? `; publisher's ImageNet-1k val ${describeReported(entry.reported)}` : '';
  return `pulled: ${entry.name} from ${entry.url} (sha256 ${sha256}): ${entry.title}${reported}`;
}

function importCached(entry: CatalogueEntry, got: Obtained, o: PullOptions, output: string): { report: ImportReport; notes: string[]; weights: string; network: string } {
  const from = got.obtained === 'file' ? `--file ${o.file}` : `${got.file} (from ${got.record.fetchedFrom})`;
  const reject = (message: string): never => {
    removeCached(got.file);
    const text = `${from} could not be imported: ${message}; ${got.obtained === 'file' ? 'its copy was' : 'it was'} removed from the cache`;
    throw got.obtained === 'file' ? new PullRequestError(text) : new PullError(text);
  };
  let net: Imported;
  try {
    net = importModel(got.file);
  } catch (e) {
    return reject((e as Error).message);
  }
  try {
    if (net.format !== entry.format) reject(`it is a ${net.format} file, but the catalogue's ${entry.name} is ${entry.format}`);
    if (entry.depth !== undefined && net.cfg.depth !== entry.depth)
      reject(`it holds a ${net.cfg.depth === null ? `custom ${net.cfg.stages.map((s) => s.units).join('-')}` : `depth-${net.cfg.depth}`} network, but the catalogue's ${entry.name} has depth ${entry.depth}`);
    const weights = pulledWeights(entry, got.record.sha256);
    net.weights = weights;
    net.source = `${net.source}; pulled from ${got.record.fetchedFrom}`;
    const pretrained = {
      name: entry.name,
      title: entry.title,
      url: entry.url,
      fetchedFrom: got.record.fetchedFrom,
      bytes: got.record.bytes,
      sha256: got.record.sha256,
      format: entry.format,
      licence: entry.licence,
      preprocessing: entry.preprocessing,
      reported: entry.reported,
    };
    (o.log ?? (() => {}))(`importing ${got.file} -> ${output}`);
    let report: ImportReport;
    try {
      report = exportImported(net, { output, fold: o.fold, opset: o.opset, probabilities: o.probabilities, progress: o.importProgress, metadata: { [PRETRAINED_KEY]: JSON.stringify(pretrained) } });
    } catch (e) {
      // A tensor that does not fit is the file's fault; a write error is not.
      if (['ImportError', 'T7Error', 'CheckpointError'].includes((e as Error).name)) reject((e as Error).message);
      throw e;
    }
    return { report, notes: net.notes, weights, network: describe(net.cfg) };
  } finally {
    net.close();
  }
}

/**
 * Pulls `name`: checks the output first (an existing one is refused unless `force`), gets the file (cache, --file
 * or download), checks it, imports it and writes the ONNX model.
 */
export async function pull(name: string, o: PullOptions = {}): Promise<PullResult> {
  const entry = findEntry(name, o);
  const pin = checkSha(o.sha256);
  const mirror = mirrorOf(entry, o);
  if (mirror) mirroredUrl(entry.url, mirror); // a malformed mirror is a bad request, found before any work
  const output = o.output ?? defaultModelPath(entry);
  checkOutputFile(output, { flag: o.output !== undefined ? '-o' : undefined, force: o.force, createParent: o.output === undefined });
  if (o.output === undefined) mkdirSync(dirname(output), { recursive: true });
  const got = await obtain(entry, o, pin);
  const { report, notes, weights, network } = importCached(entry, got, o, output);
  recordModel(got.file, got.record, output);
  return { entry, model: output, file: got.file, bytes: got.record.bytes, sha256: got.record.sha256, fetchedFrom: got.record.fetchedFrom, obtained: got.obtained, report, notes, weights, network };
}

/** The ONNX model already pulled for `name` (at `output`, default models/<name>.onnx), if it is there and unchanged; no network, no work. */
export function cachedModelPath(name: string, o: Pick<PullOptions, 'cacheDir' | 'env' | 'catalogue' | 'output'> = {}): string | undefined {
  const entry = findEntry(name, o);
  const cached = readCached(entry, cacheDir({ cacheDir: o.cacheDir, env: o.env }));
  const output = o.output ?? defaultModelPath(entry);
  return cached && isRecordedModel(cached.record, output) ? output : undefined;
}

/**
 * The model for `name`, pulled if needed (for `serve --pretrained`): the recorded model when present, else imported
 * from the cached file, else downloaded (unless `offline`). A different file already at the output is refused
 * unless `force`.
 */
export async function ensurePulled(name: string, o: PullOptions = {}): Promise<string> {
  const ready = cachedModelPath(name, o);
  if (ready) return ready;
  return (await pull(name, o)).model;
}

// ---------------------------------------------------------------------------------------------------------
// --list

export interface ListedEntry {
  name: string;
  aliases: string[];
  title: string;
  url: string;
  format: PulledFormat;
  licence: string;
  /** Exact size where known (the cached file's, else the catalogue's). */
  bytes?: number;
  approxMB?: number;
  reported: ReportedAccuracy[];
  preprocessing: string;
  /** The cached file, when there is one. */
  cached?: { file: string; bytes: number; sha256: string; fetchedFrom: string };
  /** ONNX models written from it that are still there. */
  models: string[];
}

export function listCatalogue(o: Pick<PullOptions, 'cacheDir' | 'env' | 'catalogue'> = {}): { cacheDir: string; entries: ListedEntry[] } {
  const dir = cacheDir({ cacheDir: o.cacheDir, env: o.env });
  const entries = catalogue(o).map((e): ListedEntry => {
    const c = readCached(e, dir);
    return {
      name: e.name,
      aliases: e.aliases,
      title: e.title,
      url: e.url,
      format: e.format,
      licence: e.licence,
      bytes: c?.record.bytes ?? e.bytes,
      approxMB: e.approxMB,
      reported: [...e.reported],
      preprocessing: e.preprocessing,
      cached: c ? { file: c.file, bytes: c.record.bytes, sha256: c.record.sha256, fetchedFrom: c.record.fetchedFrom } : undefined,
      models: c ? Object.keys(c.record.models).filter((m) => existsSync(m) && isRecordedModel(c.record, m)) : [],
    };
  });
  return { cacheDir: dir, entries };
}
