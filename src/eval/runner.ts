// The main thread's handle on eval's inference worker: start it, queue batches (runs happen in order), close it.

import type { Worker } from 'node:worker_threads';
import { spawnWorker } from '../util/worker.js';
import type { EvalFromWorker, EvalWorkerInit } from './protocol.js';

export interface Signature {
  inputName: string;
  inputShape: (number | string)[];
  outputName: string;
  outputShape: (number | string)[];
}

interface Job {
  resolve: (r: { scores: Float32Array; dims: number[] }) => void;
  reject: (e: Error) => void;
}

export class InferenceWorker {
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;
  private failure: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly signature: Signature,
  ) {
    worker.on('message', (m: EvalFromWorker) => {
      if (m.type !== 'result' && m.type !== 'error') return;
      const job = this.jobs.get(m.id);
      if (!job) return;
      this.jobs.delete(m.id);
      if (m.type === 'result') job.resolve({ scores: m.scores, dims: m.dims });
      else job.reject(new Error(`inference failed: ${m.message}`));
    });
    const fail = (e: Error): void => {
      this.failure = e;
      for (const j of this.jobs.values()) j.reject(e);
      this.jobs.clear();
    };
    worker.on('error', (e) => fail(new Error(`the inference worker crashed: ${e.message}`)));
    worker.on('exit', (code) => fail(new Error(`the inference worker exited (code ${code})`)));
  }

  /**
   * Starts the worker; `ready` resolves once its session is loaded. `abandon` stops it at once, loaded or not
   * (when the request turns out to be wrong while the model is still loading).
   */
  static start(init: EvalWorkerInit): { ready: Promise<InferenceWorker>; abandon: () => Promise<void> } {
    const worker = spawnWorker(import.meta.url, 'worker', init);
    const ready = new Promise<InferenceWorker>((resolve, reject) => {
      const early = (e: Error): void => reject(new Error(`the inference worker could not start: ${e.message}`));
      worker.once('error', early);
      worker.once('message', (m: EvalFromWorker) => {
        worker.off('error', early);
        if (m.type === 'ready') resolve(new InferenceWorker(worker, { inputName: m.inputName, inputShape: m.inputShape, outputName: m.outputName, outputShape: m.outputShape }));
        else {
          void worker.terminate();
          reject(new Error(m.type === 'fatal' ? m.message : `unexpected first message from the inference worker: ${m.type}`));
        }
      });
    });
    return { ready, abandon: async () => void (await worker.terminate()) };
  }

  /** Runs one batch; `data` is transferred (unusable here afterwards). Batches run in the order given. */
  run(data: Float32Array, dims: number[]): Promise<{ scores: Float32Array; dims: number[] }> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.jobs.set(id, { resolve, reject });
      this.worker.postMessage({ type: 'run', id, data, dims }, [data.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    if (this.failure) return;
    this.failure = new Error('the inference worker was closed');
    this.worker.removeAllListeners('exit');
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
    this.worker.postMessage({ type: 'close' });
    // A session release that hangs must not keep the process alive.
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }
}
