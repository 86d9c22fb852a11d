// Batches for training and evaluation, decoded and augmented in a worker thread while onnxruntime blocks this one.

import type { Worker } from 'node:worker_threads';
import { spawnWorker } from '../util/worker.js';
import { rng } from '../graph/init.js';
import { augment, colourOf, defaultAugmentation, defaultNormalisation, outputSize, sampleRandom, validateAugmentation, validateNormalisation, type Augmentation, type AugmentMode, type Normalisation } from './augment.js';
import { DatasetError, isInMemory, type Dataset, type DatasetSource, type Sample, type Split } from './datasets.js';

export interface LoaderOptions {
  dataset: DatasetSource;
  split: Split;
  /** Samples per batch (B). */
  batch: number;
  seed: number;
  /**
   * `train`: each epoch is a fresh permutation (rng(seed, `epoch${e}`)), the last partial batch is dropped, and
   * samples get the training augmentation. `test`: samples in order, the last batch may be partial.
   */
  augment: AugmentMode;
  /** Overrides the dataset's default augmentation for the mode (defaultAugmentation). */
  augmentation?: Augmentation;
  /** Overrides the dataset's default per-channel normalisation (defaultNormalisation), e.g. with a mean image. */
  normalisation?: Normalisation;
  /** The first iteration next() returns (0-based, counted over epochs): a resumed run passes its own. */
  startIteration?: number;
  /** Use only the first `limit` samples of the split (a subset for short runs). */
  limit?: number;
  /** Batches produced ahead of the consumer (default 3). */
  prefetch?: number;
  /** Images decoded at once by a folder dataset (sharp runs them on libuv's threads; default 4). */
  decodeConcurrency?: number;
}

export interface LoaderInfo {
  split: Split;
  /** Samples used (the split's size, or `limit`). */
  length: number;
  classes: number;
  labels: string[];
  channels: number;
  height: number;
  width: number;
  batch: number;
  /** Training: floor(length / batch) (the last partial batch is dropped); test: ceil(length / batch). */
  batchesPerEpoch: number;
  augmentation: Augmentation;
  normalisation: Normalisation;
}

export interface Batch {
  /** [B, C, H, W] normalised; rows from `count` on are zeros. */
  input: Float32Array;
  /** [B] class indices; rows from `count` on are 0. */
  labels: BigInt64Array;
  /** Real samples in the batch: B, except for the last batch of a test pass. */
  count: number;
  epoch: number;
  iteration: number;
  /** Dataset index of each real sample. */
  indices: Int32Array;
  /** Wall-clock time (ms since the Unix epoch) at which the worker finished the batch, and how long it took. */
  producedAt: number;
  produceMs: number;
}

/** Which samples iteration k holds: training permutes each epoch, evaluation walks the split in order. */
export class Sampler {
  readonly batchesPerEpoch: number;
  private cached?: { epoch: number; order: Int32Array };

  constructor(
    readonly length: number,
    readonly batch: number,
    readonly mode: AugmentMode,
    readonly seed: number,
  ) {
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be a positive integer, got ${batch}`);
    this.batchesPerEpoch = mode === 'train' ? Math.floor(length / batch) : Math.ceil(length / batch);
    if (this.batchesPerEpoch === 0) throw new Error(`the dataset has ${length} samples, fewer than one batch of ${batch}`);
  }

  /** Epoch e's sample order: a Fisher-Yates shuffle drawn from rng(seed, `epoch${e}`). */
  permutation(epoch: number): Int32Array {
    if (this.cached?.epoch === epoch) return this.cached.order;
    const order = new Int32Array(this.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    const u = rng(this.seed, `epoch${epoch}`);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(u() * (i + 1));
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    this.cached = { epoch, order };
    return order;
  }

  at(iteration: number): { epoch: number; indices: Int32Array } {
    if (!Number.isInteger(iteration) || iteration < 0) throw new Error(`iteration must be a non-negative integer, got ${iteration}`);
    const epoch = Math.floor(iteration / this.batchesPerEpoch);
    const start = (iteration % this.batchesPerEpoch) * this.batch;
    if (this.mode === 'test') {
      const end = Math.min(start + this.batch, this.length);
      return { epoch, indices: Int32Array.from({ length: end - start }, (_, k) => start + k) };
    }
    return { epoch, indices: this.permutation(epoch).slice(start, start + this.batch) };
  }
}

/** Everything a producer needs, resolved from LoaderOptions and the opened dataset. */
export interface Producer {
  dataset: Dataset;
  sampler: Sampler;
  info: LoaderInfo;
  seed: number;
  decodeConcurrency: number;
}

/** Opens the dataset and resolves defaults; throws the dataset's or the option's error. */
export async function prepare(o: LoaderOptions, open: (s: DatasetSource, split: Split) => Promise<Dataset>): Promise<Producer> {
  const dataset = await open(o.dataset, o.split);
  const length = o.limit === undefined ? dataset.length : o.limit;
  if (!Number.isInteger(length) || length < 1 || length > dataset.length) throw new Error(`limit must be an integer in 1..${dataset.length} (the ${o.split} split's size), got ${o.limit}`);
  const start = o.startIteration ?? 0;
  if (!Number.isInteger(start) || start < 0) throw new Error(`startIteration must be a non-negative integer, got ${start}`);
  const prefetch = o.prefetch ?? 3;
  if (!Number.isInteger(prefetch) || prefetch < 1) throw new Error(`prefetch must be a positive integer, got ${prefetch}`);
  const augmentation = o.augmentation ?? defaultAugmentation(o.dataset.kind, o.augment);
  validateAugmentation(augmentation);
  if (o.augment === 'test' && colourOf(augmentation)) throw new Error('colour augmentation is for training only: the test pass sees the images as they are');
  const normalisation = o.normalisation ?? defaultNormalisation(o.dataset.kind);
  validateNormalisation(normalisation, augmentation, { name: o.dataset.kind, channels: dataset.channels, size: dataset.size });
  const size = outputSize(augmentation, dataset.size);
  if (!size) throw new Error(`augmentation ${augmentation.kind} without a size gives images of different sizes from ${o.dataset.kind} (its images differ in size): give a crop size`);
  const sampler = new Sampler(length, o.batch, o.augment, o.seed);
  const info: LoaderInfo = {
    split: o.split,
    length,
    classes: dataset.classes,
    labels: dataset.labels,
    channels: dataset.channels,
    height: size.height,
    width: size.width,
    batch: o.batch,
    batchesPerEpoch: sampler.batchesPerEpoch,
    augmentation,
    normalisation,
  };
  return { dataset, sampler, info, seed: o.seed, decodeConcurrency: o.decodeConcurrency ?? 4 };
}

/** Builds batch `iteration` in the calling thread; the worker calls this, and tests compare against it. */
export async function produceBatch(p: Producer, iteration: number): Promise<Batch> {
  const started = performance.now();
  const { epoch, indices } = p.sampler.at(iteration);
  const { channels: C, height: H, width: W, batch: B } = p.info;
  const per = C * H * W;
  const input = new Float32Array(B * per);
  const labels = new BigInt64Array(B);
  const one = (s: Sample, k: number): void => {
    const where = (): string => p.dataset.where(indices[k]);
    if (s.channels !== C) throw new DatasetError(where(), `decoded to ${s.channels} channels, ${C} expected`);
    let got: { width: number; height: number };
    try {
      got = augment(s, p.info.augmentation, p.info.normalisation, sampleRandom(p.seed, epoch, indices[k]), input, k * per);
    } catch (e) {
      // e.g. a centre crop larger than a small image: the user needs to know which image.
      throw e instanceof DatasetError ? e : new DatasetError(where(), (e as Error).message);
    }
    if (got.width !== W || got.height !== H) throw new DatasetError(where(), `augmented to ${got.width}x${got.height}, ${W}x${H} expected`);
    labels[k] = BigInt(s.label);
  };
  const ds = p.dataset;
  if (isInMemory(ds)) {
    for (let k = 0; k < indices.length; k++) one(ds.readSync(indices[k]), k);
  } else {
    // A sliding window of decodes: sharp decodes the next images on libuv's threads while this thread augments.
    const reads: Promise<Sample>[] = [];
    const start = (k: number): void => {
      if (k >= indices.length || k < reads.length) return;
      reads[k] = ds.read(indices[k]);
      // Awaited in order below; this only stops a failure after an earlier one from counting as unhandled.
      reads[k].catch(() => undefined);
    };
    for (let k = 0; k < indices.length; k++) {
      for (let j = k; j < k + p.decodeConcurrency; j++) start(j);
      one(await reads[k], k);
    }
  }
  return { input, labels, count: indices.length, epoch, iteration, indices, producedAt: performance.timeOrigin + performance.now(), produceMs: performance.now() - started };
}

// ---------------------------------------------------------------------------------------------------------------
// The main-thread side. The worker produces batches in order from startIteration and may run at most `prefetch`
// batches ahead of what next() has handed out: each batch handed out returns one credit to the worker.

/** Data sent to the worker at start. */
export interface LoaderWorkerInit {
  options: LoaderOptions;
}

export type ToLoaderWorker = { type: 'credit'; n: number } | { type: 'close' };

export interface SerializedError {
  name: string;
  message: string;
  file?: string;
}

export type FromLoaderWorker = { type: 'ready'; info: LoaderInfo } | { type: 'batch'; batch: Batch } | { type: 'error'; error: SerializedError };

export function serializeError(e: unknown): SerializedError {
  if (e instanceof DatasetError) return { name: e.name, message: e.message, file: e.file };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

function deserializeError(s: SerializedError): Error {
  if (s.file !== undefined) {
    const e = new DatasetError(s.file, '');
    e.message = s.message;
    return e;
  }
  const e = new Error(s.message);
  if (s.name !== 'Error') e.name = s.name;
  return e;
}

/**
 * Starts the worker. Built code runs dist/src/train/loader-worker.js directly; under tsx or vitest (the sources)
 * the worker first registers tsx, which Node 20 does not pass on to workers through execArgv.
 * (src/serve/pool.ts starts its workers the same way.)
 */
function spawn(init: LoaderWorkerInit): Worker {
  return spawnWorker(import.meta.url, 'loader-worker', init);
}

interface Waiter {
  resolve: (b: Batch) => void;
  reject: (e: Error) => void;
}

export class BatchLoader {
  private readonly ready: Batch[] = [];
  private readonly waiters: Waiter[] = [];
  private failure?: Error;
  private closed = false;

  private constructor(
    private readonly worker: Worker,
    readonly info: LoaderInfo,
  ) {
    worker.on('message', (m: FromLoaderWorker) => {
      if (m.type === 'batch') this.deliver(m.batch);
      else if (m.type === 'error') this.fail(deserializeError(m.error));
    });
    worker.on('error', (e) => this.fail(new Error(`the data worker failed: ${e.message}`)));
    worker.on('exit', (code) => {
      if (!this.closed) this.fail(new Error(`the data worker exited unexpectedly (code ${code})`));
    });
    this.updateRef();
  }

  /** Starts the worker and waits until it has opened the dataset; rejects with the dataset's error if it cannot. */
  static open(options: LoaderOptions): Promise<BatchLoader> {
    return new Promise((resolve, reject) => {
      let worker: Worker;
      try {
        worker = spawn({ options });
      } catch (e) {
        reject(e as Error);
        return;
      }
      const onMessage = (m: FromLoaderWorker): void => {
        if (m.type === 'ready') {
          cleanup();
          resolve(new BatchLoader(worker, m.info));
        } else if (m.type === 'error') {
          cleanup();
          void worker.terminate();
          reject(deserializeError(m.error));
        }
      };
      const onError = (e: Error): void => {
        cleanup();
        void worker.terminate();
        reject(new Error(`the data worker failed to start: ${e.message}`));
      };
      const onExit = (code: number): void => {
        cleanup();
        reject(new Error(`the data worker exited before it was ready (code ${code})`));
      };
      const cleanup = (): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
  }

  /** The next batch, in iteration order. Batches made before a failure are still delivered; then it rejects. */
  next(): Promise<Batch> {
    const b = this.ready.shift();
    if (b) {
      this.credit();
      return Promise.resolve(b);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('the loader is closed'));
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.updateRef();
    });
  }

  /** Stops the worker. Pending next() calls reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closed = new Error('the loader is closed');
    for (const w of this.waiters.splice(0)) w.reject(closed);
    this.ready.length = 0;
    await this.worker.terminate();
  }

  private deliver(b: Batch): void {
    const w = this.waiters.shift();
    if (w) {
      this.credit();
      w.resolve(b);
      this.updateRef();
    } else {
      this.ready.push(b);
    }
  }

  private fail(e: Error): void {
    if (this.closed || this.failure) return;
    this.failure = e;
    // Batches already made come first; the failure belongs after them, so only waiters beyond them reject.
    for (const w of this.waiters.splice(0)) w.reject(e);
    this.updateRef();
  }

  private credit(): void {
    if (!this.closed && !this.failure) this.worker.postMessage({ type: 'credit', n: 1 } satisfies ToLoaderWorker);
  }

  /** Keeps the process alive only while someone awaits a batch, so a forgotten close() does not hang Node at exit. */
  private updateRef(): void {
    if (this.waiters.length > 0) this.worker.ref();
    else this.worker.unref();
  }
}
