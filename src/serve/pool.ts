// The inference workers: start them, hand a batch to an idle one, and replace one that dies.

import type { Worker } from 'node:worker_threads';
import { spawnWorker } from '../util/worker.js';
import type { Logger } from 'pino';
import type { ExecutionProvider } from '../util/providers.js';
import { ServeError } from './errors.js';
import type { FromWorker, OutputTensor, ToWorker, WorkerInit } from './protocol.js';

export interface ModelSignature {
  inputName: string;
  inputShape: (number | string)[];
  outputs: { name: string; shape: (number | string)[] }[];
}

export interface PoolOptions {
  modelPath: string;
  workers: number;
  intraOpThreads: number;
  /** onnxruntime's provider for every worker's session (see WorkerInit). */
  ep: ExecutionProvider;
  warmupDims: number[];
  log: Logger;
}

interface Slot {
  index: number;
  worker: Worker;
  ready: boolean;
  closing: boolean;
  job?: { id: number; resolve: (r: { outputs: OutputTensor[]; ms: number }) => void; reject: (e: Error) => void };
}

/** Creates the worker thread (src/serve/worker.ts, or its built .js). */
function spawn(init: WorkerInit): Worker {
  return spawnWorker(import.meta.url, 'worker', init);
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;
  private restarts: number[] = [];
  signature?: ModelSignature;
  /** Called whenever a worker becomes free (the batcher pumps its queue). */
  onIdle: () => void = () => {};
  /** Called when readiness changes (a worker died or came back). */
  onReadyChange: (ready: boolean) => void = () => {};

  constructor(private readonly o: PoolOptions) {}

  /** Starts every worker; resolves with the model's input/output signature once all have loaded and warmed up. */
  start(): Promise<ModelSignature> {
    return Promise.all(Array.from({ length: this.o.workers }, (_, i) => this.startSlot(i))).then(() => this.signature as ModelSignature);
  }

  private startSlot(index: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const worker = spawn({ modelPath: this.o.modelPath, intraOpThreads: this.o.intraOpThreads, ep: this.o.ep, warmupDims: this.o.warmupDims });
      const slot: Slot = { index, worker, ready: false, closing: false };
      this.slots[index] = slot;
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'ready') {
          slot.ready = true;
          this.signature = { inputName: m.inputName, inputShape: m.inputShape, outputs: m.outputs };
          this.o.log.info({ worker: index, loadMs: Math.round(performance.now() - started), warmupMs: Math.round(m.warmupMs) }, 'inference worker ready');
          if (m.placement) this.o.log.info({ worker: index, ep: this.o.ep, placement: m.placement.nodes }, m.placement.line);
          resolve();
          this.onReadyChange(this.ready);
          this.onIdle();
        } else if (m.type === 'fatal') {
          slot.closing = true;
          void worker.terminate();
          reject(new Error(m.message));
        } else {
          const job = slot.job;
          if (!job || job.id !== m.id) return;
          slot.job = undefined;
          if (m.type === 'result') job.resolve({ outputs: m.outputs, ms: m.ms });
          else job.reject(new ServeError(500, 'inference_failed', `inference failed: ${m.message}`));
          this.onIdle();
        }
      });
      worker.on('error', (e) => this.o.log.error({ worker: index, err: e }, 'inference worker error'));
      worker.on('exit', (code) => {
        if (slot.closing || this.closed) return;
        // A crash: fail its batch, report not-ready, and replace it (at most 5 times a minute, then give up).
        slot.ready = false;
        this.o.log.error({ worker: index, code }, 'inference worker exited unexpectedly; restarting it');
        slot.job?.reject(new ServeError(503, 'inference_failed', 'the inference worker stopped while running this request; retry', { 'Retry-After': '1' }));
        slot.job = undefined;
        reject(new Error(`inference worker exited with code ${code} while loading ${this.o.modelPath}`));
        this.onReadyChange(this.ready);
        const now = Date.now();
        this.restarts = this.restarts.filter((t) => now - t < 60_000);
        if (this.restarts.length >= 5) {
          this.o.log.fatal({ worker: index }, 'inference worker keeps dying; not restarting it');
          return;
        }
        this.restarts.push(now);
        this.startSlot(index).catch((e: Error) => this.o.log.error({ worker: index, err: e }, 'inference worker restart failed'));
      });
    });
  }

  /** All workers loaded (a pool with a dead worker is not ready). */
  get ready(): boolean {
    return this.slots.length > 0 && this.slots.every((s) => s.ready);
  }

  get idle(): number {
    return this.slots.filter((s) => s.ready && !s.job && !s.closing).length;
  }

  get size(): number {
    return this.o.workers;
  }

  /** Runs one batch on an idle worker. The caller (the batcher) only calls this when `idle > 0`. */
  run(data: Float32Array, dims: number[]): Promise<{ outputs: OutputTensor[]; ms: number }> {
    const slot = this.slots.find((s) => s.ready && !s.job && !s.closing);
    if (!slot) return Promise.reject(new Error('no idle inference worker'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.job = { id, resolve, reject };
      const msg: ToWorker = { type: 'run', id, data, dims };
      slot.worker.postMessage(msg, [data.buffer as ArrayBuffer]);
    });
  }

  /** Stops worker `index` abruptly, as a crash would (it is then replaced); for operations and tests. */
  kill(index: number): Promise<number> {
    return this.slots[index].worker.terminate();
  }

  /** Lets running batches finish, then stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(async (s) => {
        s.closing = true;
        if (s.job) await new Promise<void>((r) => {
          const job = s.job as NonNullable<Slot['job']>;
          const { resolve, reject } = job;
          job.resolve = (v) => (resolve(v), r());
          job.reject = (e) => (reject(e), r());
        });
        const exited = new Promise<void>((r) => s.worker.once('exit', () => r()));
        s.worker.postMessage({ type: 'close' } satisfies ToWorker);
        const timer = setTimeout(() => void s.worker.terminate(), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}
