// Dynamic batching: requests that arrive together run as one batch, up to a maximum batch size and a maximum
// queueing delay (waited only while more requests are on their way); the queue is bounded (full -> 503 with
// Retry-After) and every request has a deadline.

import { type ErrorCode, ServeError, unavailable } from './errors.js';
import type { OutputTensor } from './protocol.js';

export interface BatcherOptions {
  /** Most images in one run of the network. */
  maxBatch: number;
  /** How long the oldest queued request may wait for others to join its batch. */
  maxDelayMs: number;
  /** Most images waiting (not yet running); beyond it requests are refused with 503. */
  maxQueue: number;
  /** A request not answered this long after it was queued gets 503 deadline_exceeded. */
  deadlineMs: number;
}

/** Whatever runs batches: the worker pool, or a stand-in in tests. */
export interface BatchRunner {
  readonly idle: number;
  readonly size: number;
  run(data: Float32Array, dims: number[]): Promise<{ outputs: OutputTensor[]; ms: number }>;
}

export interface BatchObserver {
  batch(size: number, inferenceMs: number): void;
  queueDepth(images: number): void;
  queueWait(ms: number): void;
  rejected(code: ErrorCode): void;
}

export interface JobResult {
  /** This request's rows of each output. */
  outputs: OutputTensor[];
  queueMs: number;
  inferenceMs: number;
  /** Images in the batch this request ran in. */
  batchSize: number;
}

interface Job {
  key: string;
  count: number;
  itemDims: number[];
  data: Float32Array;
  enqueued: number;
  state: 'queued' | 'running' | 'done';
  timer: NodeJS.Timeout;
  resolve: (r: JobResult) => void;
  reject: (e: Error) => void;
}

export class Batcher {
  private readonly queue: Job[] = [];
  private queuedImages = 0;
  private running = 0;
  private delayTimer?: NodeJS.Timeout;
  private delayAt = 0;
  /** Running mean of inference milliseconds per image, for Retry-After estimates. */
  private msPerImage = 0;
  private drained: (() => void)[] = [];
  /** Requests admitted but not yet submitted (reading their body, decoding): company that is on its way. */
  private incoming = 0;

  constructor(
    private readonly o: BatcherOptions,
    private readonly runner: BatchRunner,
    private readonly observe: BatchObserver,
  ) {}

  get depth(): number {
    return this.queuedImages;
  }

  get inFlight(): number {
    return this.running;
  }

  /** Seconds until the present queue is likely to have been served. */
  retryAfterS(): number {
    const perImage = this.msPerImage || 1000;
    return ((this.queuedImages + this.o.maxBatch) * perImage) / Math.max(1, this.runner.size) / 1000;
  }

  /**
   * Announces a request that will be submitted soon (its body is being read or decoded); call the returned
   * function when it is submitted or has failed. While none is announced, a lone request does not wait
   * `maxDelayMs` for company that is not coming: the delay is an upper bound, spent only when it can pay off.
   */
  expect(): () => void {
    this.incoming++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.incoming--;
      if (this.incoming === 0) this.pump();
    };
  }

  /** True when `count` more images would overflow the queue (checked before decoding, to refuse cheaply). */
  full(count = 1): boolean {
    return this.queuedImages + count > this.o.maxQueue;
  }

  overloaded(): ServeError {
    this.observe.rejected('overloaded');
    return unavailable('overloaded', `the inference queue is full (${this.queuedImages} of ${this.o.maxQueue} images waiting); retry later`, this.retryAfterS());
  }

  /**
   * Queues `count` inputs of shape `itemDims` (data holds all of them, concatenated) and resolves with their
   * rows of the outputs. Only inputs of the same shape share a batch. `signal` aborts a request whose client left.
   */
  submit(data: Float32Array, itemDims: number[], count: number, signal?: AbortSignal): Promise<JobResult> {
    if (count > this.o.maxBatch) return Promise.reject(new ServeError(400, 'invalid_tensor', `a request may hold at most ${this.o.maxBatch} inputs (the max batch size), got ${count}`));
    if (this.full(count)) return Promise.reject(this.overloaded());
    return new Promise<JobResult>((resolve, reject) => {
      const job: Job = {
        key: itemDims.join('x'),
        count,
        itemDims,
        data,
        enqueued: performance.now(),
        state: 'queued',
        timer: setTimeout(() => this.expire(job), this.o.deadlineMs),
        resolve,
        reject,
      };
      signal?.addEventListener('abort', () => this.finish(job, new ServeError(499, 'client_closed_request', 'the client closed the connection before the answer')), { once: true });
      this.queue.push(job);
      this.queuedImages += count;
      this.observe.queueDepth(this.queuedImages);
      this.pump();
    });
  }

  private expire(job: Job): void {
    if (job.state === 'done') return;
    this.observe.rejected('deadline_exceeded');
    const where = job.state === 'queued' ? 'waiting in the queue' : 'running';
    this.finish(job, unavailable('deadline_exceeded', `no answer within the ${this.o.deadlineMs} ms deadline (still ${where}); retry later`, this.retryAfterS()));
  }

  /** Settles a job early (deadline, client gone); a queued one leaves the queue, a running one's result is dropped. */
  private finish(job: Job, err: Error): void {
    if (job.state === 'done') return;
    if (job.state === 'queued') this.remove([job]);
    job.state = 'done';
    clearTimeout(job.timer);
    job.reject(err);
    this.checkDrained();
  }

  private remove(jobs: Job[]): void {
    for (const j of jobs) {
      const i = this.queue.indexOf(j);
      if (i >= 0) {
        this.queue.splice(i, 1);
        this.queuedImages -= j.count;
      }
    }
    this.observe.queueDepth(this.queuedImages);
  }

  /** Starts every batch that is due on an idle worker; arms a timer for the one that is not due yet. */
  pump(): void {
    while (this.runner.idle > 0 && this.queue.length > 0) {
      const head = this.queue[0];
      const batch: Job[] = [];
      let images = 0;
      for (const j of this.queue) {
        if (j.key !== head.key || images + j.count > this.o.maxBatch) continue;
        batch.push(j);
        images += j.count;
        if (images === this.o.maxBatch) break;
      }
      const dueAt = head.enqueued + this.o.maxDelayMs;
      if (images < this.o.maxBatch && this.incoming > 0 && performance.now() < dueAt) {
        this.arm(dueAt);
        return;
      }
      this.dispatch(batch, images);
    }
  }

  private arm(at: number): void {
    if (this.delayTimer && this.delayAt <= at) return;
    clearTimeout(this.delayTimer);
    this.delayAt = at;
    this.delayTimer = setTimeout(() => {
      this.delayTimer = undefined;
      this.pump();
    }, Math.max(0, at - performance.now()));
  }

  private dispatch(batch: Job[], images: number): void {
    this.remove(batch);
    const itemSize = batch[0].data.length / batch[0].count;
    const data = new Float32Array(images * itemSize);
    let offset = 0;
    const now = performance.now();
    for (const j of batch) {
      j.state = 'running';
      data.set(j.data, offset);
      offset += j.data.length;
      this.observe.queueWait(now - j.enqueued);
    }
    this.running++;
    this.runner
      .run(data, [images, ...batch[0].itemDims])
      .then(
        ({ outputs, ms }) => {
          this.observe.batch(images, ms);
          const per = ms / images;
          this.msPerImage = this.msPerImage ? 0.8 * this.msPerImage + 0.2 * per : per;
          let row = 0;
          for (const j of batch) {
            const mine = outputs.map((o) => {
              const rowSize = o.data.length / o.dims[0];
              return { name: o.name, dims: [j.count, ...o.dims.slice(1)], data: o.data.slice(row * rowSize, (row + j.count) * rowSize) };
            });
            row += j.count;
            if (j.state === 'done') continue;
            j.state = 'done';
            clearTimeout(j.timer);
            j.resolve({ outputs: mine, queueMs: now - j.enqueued, inferenceMs: ms, batchSize: images });
          }
        },
        (e: Error) => {
          for (const j of batch) {
            if (j.state === 'done') continue;
            j.state = 'done';
            clearTimeout(j.timer);
            j.reject(e);
          }
        },
      )
      .finally(() => {
        this.running--;
        this.checkDrained();
        this.pump();
      });
  }

  /** Resolves once nothing is queued or running. */
  drain(): Promise<void> {
    return new Promise((r) => {
      this.drained.push(r);
      this.checkDrained();
    });
  }

  private checkDrained(): void {
    if (this.queue.length > 0 || this.running > 0) return;
    for (const r of this.drained.splice(0)) r();
  }
}
