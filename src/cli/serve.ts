// `resnet-onnx serve` (the HTTP inference server) and `resnet-onnx triton` (a Triton model repository for the
// same model).

import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import * as ort from 'onnxruntime-node';
import { exportInference } from '../export/inference.js';
import { resolveConfig } from '../models/config.js';
import { ModelFileError } from '../serve/model-info.js';
import { SERVE_DEFAULTS, ServeOptionError, type ServeOptions, startServer } from '../serve/server.js';
import { TRITON_FIELDS, TritonOptionError, writeTritonRepository } from '../serve/triton.js';
import { PathError, checkInputFile } from '../util/files.js';
import { modelsDir } from '../util/paths.js';
import { PullError, ensurePulled } from '../pull/index.js';
import { CliError, intArg, numArg } from './common.js';
import { defaultOutput } from './export.js';
import { downloadBar } from './pull.js';
import { readModelOrExplain } from './model-file.js';

/** The catalogue name of the paper's trained ResNet-200, served by default once it has been pulled. */
export const DEFAULT_PRETRAINED = 'resnet200';
/** What the random-init default says about getting real weights (log, page, every response, /v2 metadata). */
export const FETCH_REAL_WEIGHTS = `for the paper's trained ResNet-200 run: npx resnet-onnx pull ${DEFAULT_PRETRAINED} && npm start`;

/**
 * The model served when neither --model nor --pretrained is given: the paper's trained ResNet-200 when it has been
 * pulled (or its file is in the download cache: imported then, no network), else the random-init ResNet-200,
 * exported on first use. Never downloads.
 */
async function defaultModel(): Promise<{ path: string; hint?: string }> {
  try {
    const path = await ensurePulled(DEFAULT_PRETRAINED, { offline: true, log: (m) => console.error(m) });
    return { path };
  } catch (e) {
    // Not pulled is the usual case and needs no note; anything else (a changed file, a broken cache) is said.
    if (!(e instanceof PullError && /is not in the cache/.test(e.message))) console.error(`note: not serving the pulled ${DEFAULT_PRETRAINED}: ${(e as Error).message}`);
  }
  const cfg = resolveConfig({ depth: 200 });
  const path = join(modelsDir(), basename(defaultOutput(cfg)));
  if (!existsSync(path)) {
    console.error(`${path} does not exist: exporting ResNet-200 (random-init weights, seed 0) first ...`);
    mkdirSync(modelsDir(), { recursive: true });
    exportInference(cfg, { output: path });
  }
  return { path, hint: FETCH_REAL_WEIGHTS };
}

/** `serve --pretrained NAME`: the catalogue model, pulled into the cache (and imported) first if needed. */
async function pretrainedModel(name: string, quiet: boolean): Promise<string> {
  const dl = downloadBar(!quiet);
  try {
    // A wrong name exits 2 (PullRequestError); a download, hash or import failure exits 1.
    return await ensurePulled(name, { log: dl.note, download: { onProgress: dl.update, log: dl.note } });
  } finally {
    dl.stop();
  }
}

/** The model file, checked before any work: a file (not a folder), and an ONNX model (not text, weights, ...). */
async function modelPath(given: string | undefined): Promise<string> {
  if (given === undefined) return (await defaultModel()).path;
  checkInputFile(given, '--model');
  return given;
}

/** A flag as typed (a string), or its default (a number). */
type Given = string | number;

/**
 * Milliseconds as whole microseconds for a config field, exactly (decimal arithmetic, no float rounding):
 * `0.5` is 500 us; a value finer than a microsecond, or one the field cannot hold, is refused naming the field.
 */
function msToMicroseconds(flag: string, value: Given, key: 'maxQueueDelayUs' | 'timeoutUs'): bigint {
  const f = TRITON_FIELDS[key];
  const given = String(value);
  const m = /^\s*(\d+)(?:\.(\d*))?\s*$/.exec(given);
  if (!m) throw new CliError(`${flag} must be a number of milliseconds >= ${f.min === 0n ? 0 : 0.001}, got '${given}'`);
  const frac = (m[2] ?? '').replace(/0+$/, '');
  if (frac.length > 3) throw new CliError(`${flag} ${given}: ${f.field} holds whole microseconds; give at most 3 decimals (e.g. ${m[1]}.${frac.slice(0, 3) || '0'})`);
  const us = BigInt(m[1]) * 1000n + BigInt(frac.padEnd(3, '0'));
  if (us < f.min || us > f.max) throw new CliError(`${flag} ${given}: ${f.field} (${f.type}, microseconds) must be from ${f.min} to ${f.max} us, i.e. ${flag} from ${f.min === 0n ? 0 : 0.001} to ${f.max / 1000n}.${String(f.max % 1000n).padStart(3, '0')}`);
  return us;
}

/** An integer flag for a config field, refused outside the field's range (naming the field and the range). */
function fieldInt(flag: string, value: Given, key: 'maxBatch' | 'instances' | 'maxQueue'): number {
  const f = TRITON_FIELDS[key];
  const given = String(value);
  if (!/^\s*-?\d+\s*$/.test(given)) throw new CliError(`${flag} must be an integer from ${f.min} to ${f.max}, got '${given}'`);
  const v = BigInt(given.trim());
  if (v < f.min || v > f.max) throw new CliError(`${flag} ${given.trim()}: ${f.field} is ${f.type === 'int32' ? 'an int32' : 'a uint32'} field; give ${f.min} to ${f.max}`);
  return Number(v);
}

/** Flags of an option renamed for consistency with `serve`: a clear message instead of "unknown option". */
function renamed(old: string, now: string, hint: string): Option {
  return new Option(`${old} <value>`)
    .hideHelp()
    .argParser((): never => {
      throw new CliError(`${old} is now ${now} (${hint})`);
    });
}

const mb = (name: string) => (v: string): number => {
  const n = numArg(name)(v);
  if (n <= 0) throw new InvalidArgumentError(`${name} must be a positive number of megabytes, got '${v}'`);
  return n;
};
const MiB = 1024 * 1024;

/** The server's options as flags: sizes in MiB, and the model optional (the default one is exported if absent). */
type ServeFlags = Omit<ServeOptions, 'model' | 'maxBodyBytes' | 'maxJsonBytes' | 'decodeConcurrency' | 'logDestination' | 'weightsHint'> & {
  model?: string;
  pretrained?: string;
  maxBodyMb: number;
  maxJsonMb: number;
};

export function serveCommand(prog: Command): void {
  const d = SERVE_DEFAULTS;
  prog
    .command('serve')
    .description('serve image classification with any model this project wrote (export, train, import) over HTTP: POST /classify, KServe v2 (JSON and binary tensors), /metrics, a web page at /')
    .option('--model <file>', "any ONNX model this project wrote (export, train, import, pull); its metadata gives labels and preprocessing (default: the paper's ResNet-200 if pulled, else a random-init one, exported first if absent)")
    .option('--pretrained <name>', 'serve a published model from the catalogue (see `pull --list`), pulled into the cache first if needed')
    .option('--host <address>', 'address to listen on (0.0.0.0 for all interfaces)', d.host)
    .option('-p, --port <n>', 'port (0: any free port)', intArg('--port', 0), d.port)
    .option('--max-batch <n>', 'most images per network run (dynamic batching)', intArg('--max-batch'), d.maxBatch)
    .option('--max-delay-ms <n>', 'longest a request waits for others to join its batch', intArg('--max-delay-ms', 0), d.maxDelayMs)
    .option('--max-queue <n>', 'most images waiting; beyond it requests get 503 + Retry-After', intArg('--max-queue'), d.maxQueue)
    .option('--deadline-ms <n>', 'per-request deadline once queued (503 when exceeded)', intArg('--deadline-ms'), d.deadlineMs)
    .option('--max-body-mb <mb>', 'largest image upload', mb('--max-body-mb'), d.maxBodyBytes / MiB)
    .option('--max-json-mb <mb>', 'largest KServe v2 inference body (JSON, or JSON header + binary tensors)', mb('--max-json-mb'), d.maxJsonBytes / MiB)
    .option('--max-pixels <n>', 'largest decoded image (width x height of the first frame)', intArg('--max-pixels'), d.maxPixels)
    .option('--min-side <n>', 'smallest shorter side accepted (422 below)', intArg('--min-side'), d.minSide)
    .option('--workers <n>', 'inference worker threads, one onnxruntime session each', intArg('--workers'), d.workers)
    .option('--threads <n>', 'onnxruntime threads per worker (default: cores / workers)', intArg('--threads'))
    .addOption(new Option('--ep <provider>', "onnxruntime execution provider: cpu, cuda (installed separately, see the README's GPU section) or webgpu; a GPU one that cannot start fails the start (exit 1), and where each op ran is logged").choices(['cpu', 'cuda', 'webgpu']).default(d.ep))
    .option('--drain-timeout-ms <n>', 'on SIGTERM, how long to wait for in-flight requests', intArg('--drain-timeout-ms', 0), d.drainTimeoutMs)
    .addOption(new Option('--log-level <level>', 'log level (JSON logs on stdout)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default(d.logLevel))
    .action(async (f: ServeFlags) => {
      if (f.model !== undefined && f.pretrained !== undefined) throw new CliError('--model and --pretrained conflict: give one');
      let model: string;
      let weightsHint: string | undefined;
      if (f.pretrained !== undefined) model = await pretrainedModel(f.pretrained, f.logLevel === 'silent');
      else if (f.model !== undefined) model = await modelPath(f.model);
      else ({ path: model, hint: weightsHint } = await defaultModel());
      let server;
      try {
        const { model: _given, pretrained: _name, maxBodyMb, maxJsonMb, ...options } = f;
        server = await startServer({ ...options, model, weightsHint, maxBodyBytes: Math.round(maxBodyMb * MiB), maxJsonBytes: Math.round(maxJsonMb * MiB) });
      } catch (e) {
        if (e instanceof ModelFileError || e instanceof ServeOptionError) throw new CliError(e.message);
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' || (e as NodeJS.ErrnoException).code === 'EACCES' || (e as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL')
          throw new Error(`cannot listen on ${f.host}:${f.port}: ${(e as Error).message}`);
        throw e;
      }
      const running = server;
      let signals = 0;
      const done = new Promise<boolean>((resolve) => {
        const stop = (sig: NodeJS.Signals): void => {
          if (++signals > 1) {
            running.log.warn(`${sig} again: exiting without draining`);
            process.exit(1);
          }
          running.log.info(`${sig} received`);
          void running.close().then(resolve);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      try {
        await running.ready;
      } catch (e) {
        await running.close();
        throw new Error(`cannot serve ${model}: ${(e as Error).message}`);
      }
      const clean = await done;
      if (!clean) throw new Error('shutdown drain timed out; some requests were cut off');
    });

  prog
    .command('triton')
    .description('write a Triton Inference Server model repository (ONNX Runtime backend, dynamic batching) for a model this project wrote')
    .option('--model <file>', 'ONNX model written by this project (default: the ResNet-200 that `serve` uses)')
    .option('-o, --out <dir>', 'repository folder (created if absent); the model goes to <dir>/<name>/', 'triton-models')
    .option('--force', 'replace the model\'s folder if the repository already holds it')
    .addOption(new Option('--max-batch <n>', `max_batch_size (1 to ${TRITON_FIELDS.maxBatch.max})`).default(d.maxBatch))
    .addOption(new Option('--max-delay-ms <ms>', 'dynamic batching: longest a request waits for others (max_queue_delay_microseconds; up to 3 decimals)').default(d.maxDelayMs))
    .addOption(new Option('--max-queue <n>', `queue policy: max_queue_size, requests beyond it are rejected (1 to ${TRITON_FIELDS.maxQueue.max})`).default(d.maxQueue))
    .addOption(new Option('--deadline-ms <ms>', 'queue policy: a request not scheduled within it is rejected (default_timeout_microseconds)').default(d.deadlineMs))
    .addOption(new Option('--instances <n>', 'model instances (instance_group count)').default(1))
    .option('--gpu', 'instance_group kind KIND_GPU (default KIND_CPU)')
    .addOption(renamed('--max-delay-us', '--max-delay-ms', 'milliseconds, as `serve` takes them: 5000 us is --max-delay-ms 5'))
    .addOption(renamed('--timeout-ms', '--deadline-ms', 'the same milliseconds, as `serve` names them'))
    .addOption(renamed('--output', '-o/--out', 'the repository is a folder: --out DIR'))
    .action(async (f: { model?: string; out: string; force?: boolean; maxBatch: Given; maxDelayMs: Given; maxQueue: Given; deadlineMs: Given; instances: Given; gpu?: boolean }) => {
      // Every flag is checked before any work (the default model is exported only for a valid request).
      const options = {
        repository: f.out,
        maxBatch: fieldInt('--max-batch', f.maxBatch, 'maxBatch'),
        maxQueueDelayUs: msToMicroseconds('--max-delay-ms', f.maxDelayMs, 'maxQueueDelayUs'),
        maxQueue: fieldInt('--max-queue', f.maxQueue, 'maxQueue'),
        timeoutUs: msToMicroseconds('--deadline-ms', f.deadlineMs, 'timeoutUs'),
        instances: fieldInt('--instances', f.instances, 'instances'),
        kind: f.gpu ? ('gpu' as const) : ('cpu' as const),
        force: f.force,
      };
      if (existsSync(f.out) && !statSync(f.out).isDirectory()) throw new PathError(`--out ${f.out} is a file; give the repository folder (it is created if absent)`);
      const path = await modelPath(f.model);
      const info = readModelOrExplain(path);
      const target = join(f.out, info.name);
      if (!f.force && existsSync(target) && statSync(target).isDirectory() && readdirSync(target).length > 0)
        throw new PathError(`the repository already holds model '${info.name}' (${target}); pass --force to replace it, or choose another --out`);
      // The session gives the true input/output names and the class count.
      let session;
      try {
        session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1 });
      } catch (e) {
        throw new Error(`onnxruntime cannot load ${path}: ${(e as Error).message}`);
      }
      const shapeOf = (m: ort.InferenceSession.ValueMetadata): (number | string)[] => (m.isTensor ? [...m.shape] : []);
      const sig = { inputName: session.inputNames[0], inputShape: shapeOf(session.inputMetadata[0]), outputs: session.outputNames.map((name, i) => ({ name, shape: shapeOf(session.outputMetadata[i]) })) };
      await session.release();
      const classes = sig.outputs[0].shape[1];
      const labels = typeof classes === 'number' && info.labels.length !== classes ? Array.from({ length: classes }, (_, i) => `class_${i}`) : info.labels;
      let repo;
      try {
        repo = writeTritonRepository(info, sig, labels, options);
      } catch (e) {
        if (e instanceof TritonOptionError) throw new CliError(e.message);
        throw e;
      }
      console.log(`wrote Triton model repository ${repo.dir}: ${repo.files.map((p) => p.slice(repo.dir.length + 1)).join(', ')}`);
      console.log(`weights: ${info.weights}${info.randomWeights ? ' (not trained)' : ''}`);
      console.log(`run: tritonserver --model-repository=${resolve(f.out)}`);
    });
}
