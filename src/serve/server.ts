// Starts the inference server: reads the model's metadata, starts the workers, listens, and shuts down
// gracefully (stop accepting, finish what is in flight, stop the workers).

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { pino, type DestinationStream, type Level, type Logger } from 'pino';
import sharp from 'sharp';
import { packageVersion } from '../util/paths.js';
import { EXECUTION_PROVIDERS, type ExecutionProvider, isExecutionProvider } from '../util/providers.js';
import { createApp } from './app.js';
import { Batcher } from './batcher.js';
import { type ServeContext, type ServeState, weightsWarning } from './context.js';
import { createMetrics } from './metrics.js';
import { type ModelInfo, readModelInfo } from './model-info.js';
import { WorkerPool } from './pool.js';
import { Semaphore } from './semaphore.js';

export interface ServeOptions {
  /** The ONNX model to serve (exported by this project; its metadata gives labels and preprocessing). */
  model: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  deadlineMs: number;
  maxBodyBytes: number;
  maxJsonBytes: number;
  maxPixels: number;
  minSide: number;
  /** Inference worker threads, each with its own onnxruntime session. */
  workers: number;
  /** onnxruntime intra-op threads per worker (default: cores / workers). */
  threads?: number;
  /** onnxruntime's execution provider; a GPU one that cannot start fails the start-up (no CPU fallback). */
  ep: ExecutionProvider;
  /** Concurrent image decodes (default: cores). */
  decodeConcurrency?: number;
  /** How long a graceful shutdown waits for in-flight requests before it forces the rest. */
  drainTimeoutMs: number;
  logLevel: Level | 'silent';
  /** Where logs go (default stdout). */
  logDestination?: DestinationStream;
  /** Said with every random-weights warning (log, page, responses, /v2 metadata): how to get trained weights. */
  weightsHint?: string;
}

export const SERVE_DEFAULTS: Omit<ServeOptions, 'model'> = {
  host: '127.0.0.1',
  port: 8080,
  maxBatch: 8,
  maxDelayMs: 10,
  maxQueue: 64,
  deadlineMs: 30_000,
  maxBodyBytes: 20 * 1024 * 1024,
  maxJsonBytes: 64 * 1024 * 1024,
  maxPixels: 40_000_000,
  minSide: 16,
  workers: 1,
  ep: 'cpu',
  drainTimeoutMs: 30_000,
  logLevel: 'info',
};

export class ServeOptionError extends Error {
  override name = 'ServeOptionError';
}

function check(o: ServeOptions): void {
  const int = (k: keyof ServeOptions, min: number, max = Number.MAX_SAFE_INTEGER): void => {
    const v = o[k];
    if (v === undefined && (k === 'threads' || k === 'decodeConcurrency')) return;
    // Named as the command line spells it (maxBatch -> --max-batch; byte limits are given in MiB there).
    const flag = `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/-bytes$/, '-mb')}`;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ServeOptionError(`${k} (${flag}) must be an integer from ${min} to ${max}, got ${String(v)}`);
  };
  int('port', 0, 65535);
  int('maxBatch', 1, 256);
  int('maxDelayMs', 0, 10_000);
  int('maxQueue', 1);
  int('deadlineMs', 1);
  int('maxBodyBytes', 1);
  int('maxJsonBytes', 1);
  int('maxPixels', 1);
  int('minSide', 1);
  int('workers', 1, 64);
  int('threads', 1, 256);
  int('decodeConcurrency', 1, 256);
  int('drainTimeoutMs', 0);
  if (!isExecutionProvider(String(o.ep))) throw new ServeOptionError(`ep (--ep) must be one of ${EXECUTION_PROVIDERS.join(', ')}, got ${String(o.ep)}`);
}

export interface RunningServer {
  url: string;
  port: number;
  info: ModelInfo;
  /** Resolves when the model is loaded and warmed up; rejects if it cannot be loaded. */
  ready: Promise<void>;
  log: Logger;
  /** Graceful shutdown; resolves `true` if everything in flight finished within the drain timeout. */
  close(): Promise<boolean>;
  /** The same context the routes see (tests read state and metrics from it). */
  context: ServeContext;
  pool: WorkerPool;
}

let loadersBlocked = false;

/** Defence in depth: libvips never even tries to parse vector or document formats in this process. */
function blockRiskyLoaders(): void {
  if (loadersBlocked) return;
  sharp.block({ operation: ['VipsForeignLoadSvg', 'VipsForeignLoadPdf', 'VipsForeignLoadMagick', 'VipsForeignLoadOpenslide', 'VipsForeignLoadFits', 'VipsForeignLoadMatrix', 'VipsForeignLoadCsv'] });
  loadersBlocked = true;
}

export async function startServer(options: Partial<ServeOptions> & { model: string }): Promise<RunningServer> {
  const o: ServeOptions = { ...SERVE_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)), model: options.model } as ServeOptions;
  check(o);
  const log = pino({ level: o.logLevel, base: { service: 'resnet-onnx' } }, o.logDestination ?? pino.destination(1));
  const info = { ...readModelInfo(o.model), ...(o.weightsHint ? { weightsHint: o.weightsHint } : {}) };
  blockRiskyLoaders();
  const cores = availableParallelism();
  const threads = o.threads ?? Math.max(1, Math.floor(cores / o.workers));
  const warning = weightsWarning(info);
  // A mean image is logged by its shape, not its kilobytes of base64.
  const { meanImage, ...preprocessing } = info.preprocessing;
  log.info(
    { model: info.name, path: info.path, architecture: info.architecture, weights: info.weights, preprocessing: meanImage ? { ...preprocessing, meanImage: { shape: meanImage.shape } } : preprocessing },
    `serving ${info.name}: ${info.architecture}; weights ${info.weights}`,
  );
  if (warning) log.warn({ weights: info.weights }, `RANDOM WEIGHTS: ${warning}`);
  if (info.defaultPreprocessing) log.warn('the model has no preprocessing metadata: using the ImageNet default (shorter side 320, centre 320x320 crop)');

  const metrics = createMetrics(o.maxBatch, info.name, info.weights);
  const channels = info.preprocessing.channelOrder === 'L' ? 1 : 3;
  const pool = new WorkerPool({ modelPath: o.model, workers: o.workers, intraOpThreads: threads, ep: o.ep, warmupDims: [1, channels, info.preprocessing.crop, info.preprocessing.crop], log });
  const batcher = new Batcher({ maxBatch: o.maxBatch, maxDelayMs: o.maxDelayMs, maxQueue: o.maxQueue, deadlineMs: o.deadlineMs }, pool, metrics.observer);
  pool.onIdle = () => batcher.pump();
  const state: ServeState = { ready: false, draining: false };
  const decodeConcurrency = o.decodeConcurrency ?? cores;
  const ctx: ServeContext = {
    info,
    labels: info.labels,
    batcher,
    decodeSlots: new Semaphore(decodeConcurrency, o.maxQueue),
    limits: { maxBodyBytes: o.maxBodyBytes, maxJsonBytes: o.maxJsonBytes, maxPixels: o.maxPixels, minSide: o.minSide, maxBatch: o.maxBatch },
    metrics,
    log,
    state,
    version: packageVersion(),
  };
  const app = createApp(ctx);

  // Listen first, so /healthz answers (and /readyz says 503) while the model loads.
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(o.port, o.host, (err?: Error) => (err ? reject(err) : resolve(s)));
    s.once('error', reject);
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 30_000;
  server.requestTimeout = 120_000;
  const port = (server.address() as AddressInfo).port;
  const url = `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`;
  log.info({ url, maxBatch: o.maxBatch, maxDelayMs: o.maxDelayMs, maxQueue: o.maxQueue, deadlineMs: o.deadlineMs, workers: o.workers, threads, ep: o.ep }, `listening on ${url}`);

  // Requests the HTTP server is handling, so shutdown can wait for them.
  let active = 0;
  let idle: (() => void)[] = [];
  server.on('request', (_req, res) => {
    active++;
    res.once('close', () => {
      active--;
      if (active === 0) for (const r of idle.splice(0)) r();
    });
  });

  const ready = pool.start().then(
    (sig) => {
      ctx.signature = sig;
      const out = sig.outputs.find((x) => x.name === 'logits') ?? sig.outputs[0];
      const classes = typeof out.shape[1] === 'number' ? out.shape[1] : info.labels.length;
      if (info.labels.length !== classes) {
        if (info.labels.length > 0) log.warn({ labels: info.labels.length, classes }, 'the label count does not match the model output; using class_<i> names');
        ctx.labels = Array.from({ length: classes }, (_, i) => `class_${i}`);
      }
      state.ready = true;
      pool.onReadyChange = (r) => (state.ready = r);
      log.info({ model: info.name, weights: info.weights }, 'ready');
    },
    (e: Error) => {
      state.failed = e.message;
      log.error({ err: e }, 'the model could not be loaded');
      throw e;
    },
  );
  ready.catch(() => {});

  let closing: Promise<boolean> | undefined;
  const close = (): Promise<boolean> => {
    closing ??= (async () => {
      state.draining = true;
      log.info({ inFlight: active, queued: batcher.depth }, 'shutting down: no new connections; finishing in-flight requests');
      const stopped = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const drained = Promise.all([batcher.drain(), active === 0 ? Promise.resolve() : new Promise<void>((r) => idle.push(r))]);
      let timer: NodeJS.Timeout | undefined;
      const clean = await Promise.race([drained.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), o.drainTimeoutMs)))]);
      clearTimeout(timer);
      if (!clean) log.warn({ inFlight: active, queued: batcher.depth }, 'drain timeout: closing the remaining connections');
      server.closeAllConnections();
      await stopped;
      idle = [];
      await ready.catch(() => {});
      await pool.close();
      log.info({ clean }, 'stopped');
      log.flush();
      return clean;
    })();
    return closing;
  };

  return { url, port, info, ready, log, close, context: ctx, pool };
}
