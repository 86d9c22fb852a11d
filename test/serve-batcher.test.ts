// The dynamic batcher alone, against a stand-in runner whose batches finish when the test says: batch
// formation (size cap, delay, shapes), the bounded queue, deadlines, aborted clients and draining.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Batcher, type BatchObserver, type BatchRunner } from '../src/serve/batcher.js';
import { ServeError } from '../src/serve/errors.js';
import type { OutputTensor } from '../src/serve/protocol.js';

/** Runs batches only when `finish()` is called; output row i = [first input value of image i, batch size]. */
class FakeRunner implements BatchRunner {
  size = 1;
  batches: number[][] = [];
  private pending: { data: Float32Array; dims: number[]; resolve: (r: { outputs: OutputTensor[]; ms: number }) => void; reject: (e: Error) => void }[] = [];
  get idle(): number {
    return this.size - this.pending.length;
  }
  run(data: Float32Array, dims: number[]): Promise<{ outputs: OutputTensor[]; ms: number }> {
    this.batches.push(dims);
    return new Promise((resolve, reject) => this.pending.push({ data, dims, resolve, reject }));
  }
  finish(): void {
    const b = this.pending.shift();
    if (!b) throw new Error('no batch running');
    const n = b.dims[0];
    const per = b.data.length / n;
    const out = new Float32Array(n * 2);
    for (let i = 0; i < n; i++) out.set([b.data[i * per], n], i * 2);
    b.resolve({ outputs: [{ name: 'logits', dims: [n, 2], data: out }], ms: 10 });
  }
  fail(): void {
    this.pending.shift()?.reject(new Error('boom'));
  }
}

const observed = { batches: [] as number[], rejected: [] as string[], depth: 0 };
const observer: BatchObserver = {
  batch: (n) => void observed.batches.push(n),
  queueDepth: (n) => void (observed.depth = n),
  queueWait: () => {},
  rejected: (c) => void observed.rejected.push(c),
};

const image = (v: number, dims = [3, 4, 4]): Float32Array => new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(v);
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  observed.batches = [];
  observed.rejected = [];
});
afterEach(() => vi.useRealTimers());

describe('Batcher', () => {
  it('a lone request runs at once when no other is on its way', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 4, maxDelayMs: 50, maxQueue: 10, deadlineMs: 10_000 }, runner, observer);
    const p = b.submit(image(1), [3, 4, 4], 1);
    expect(runner.batches).toEqual([[1, 3, 4, 4]]);
    runner.finish();
    expect((await p).queueMs).toBe(0);
  });

  it('waits up to maxDelayMs for requests on their way, then runs what it has', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 4, maxDelayMs: 50, maxQueue: 10, deadlineMs: 10_000 }, runner, observer);
    const second = b.expect();
    const third = b.expect();
    const p1 = b.submit(image(1), [3, 4, 4], 1);
    await vi.advanceTimersByTimeAsync(30);
    const p2 = b.submit(image(2), [3, 4, 4], 1);
    second();
    expect(runner.batches).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(21);
    expect(runner.batches).toEqual([[2, 3, 4, 4]]);
    third(); // never came (its client left): nothing changes
    runner.finish();
    const [r1, r2] = await Promise.all([p1, p2]);
    expect(Array.from(r1.outputs[0].data)).toEqual([1, 2]);
    expect(Array.from(r2.outputs[0].data)).toEqual([2, 2]);
    expect(r1.batchSize).toBe(2);
    expect(r1.queueMs).toBeGreaterThanOrEqual(50);
  });

  it('runs at once when a full batch is queued, and never exceeds maxBatch', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 3, maxDelayMs: 1000, maxQueue: 10, deadlineMs: 10_000 }, runner, observer);
    const more = b.expect();
    const ps = [1, 2, 3, 4, 5].map((v) => b.submit(image(v), [3, 4, 4], 1));
    expect(runner.batches).toEqual([[3, 3, 4, 4]]);
    runner.finish();
    await settle();
    // The remaining two have waited less than maxDelayMs: they wait for company (or the delay).
    expect(runner.batches).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(runner.batches[1]).toEqual([2, 3, 4, 4]);
    runner.finish();
    const rs = await Promise.all(ps);
    more();
    expect(rs.map((r) => r.outputs[0].data[0])).toEqual([1, 2, 3, 4, 5]);
    expect(observed.batches).toEqual([3, 2]);
  });

  it('batches only inputs of the same shape; multi-image requests get their own rows', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 8, maxDelayMs: 0, maxQueue: 20, deadlineMs: 10_000 }, runner, observer);
    runner.size = 0; // hold everything in the queue
    const a = b.submit(image(1), [3, 4, 4], 1);
    const big = b.submit(new Float32Array([...image(7, [3, 8, 8]), ...image(8, [3, 8, 8])]), [3, 8, 8], 2);
    const c = b.submit(image(3), [3, 4, 4], 1);
    runner.size = 1;
    b.pump();
    expect(runner.batches[0]).toEqual([2, 3, 4, 4]);
    runner.finish();
    await settle();
    expect(runner.batches[1]).toEqual([2, 3, 8, 8]);
    runner.finish();
    const [ra, rbig, rc] = await Promise.all([a, big, c]);
    expect(ra.outputs[0].data[0]).toBe(1);
    expect(rc.outputs[0].data[0]).toBe(3);
    expect(rbig.outputs[0].dims).toEqual([2, 2]);
    expect([rbig.outputs[0].data[0], rbig.outputs[0].data[2]]).toEqual([7, 8]);
  });

  it('a full queue refuses with 503 overloaded and a Retry-After', async () => {
    const runner = new FakeRunner();
    runner.size = 0;
    const b = new Batcher({ maxBatch: 2, maxDelayMs: 0, maxQueue: 3, deadlineMs: 10_000 }, runner, observer);
    const held = [1, 2, 3].map((v) => b.submit(image(v), [3, 4, 4], 1));
    expect(b.full()).toBe(true);
    const err = await b.submit(image(4), [3, 4, 4], 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServeError);
    expect((err as ServeError).status).toBe(503);
    expect((err as ServeError).code).toBe('overloaded');
    expect(Number((err as ServeError).headers['Retry-After'])).toBeGreaterThanOrEqual(1);
    expect(observed.rejected).toEqual(['overloaded']);
    held.forEach((p) => p.catch(() => {}));
  });

  it('a request past its deadline is dropped from the queue with 503; a late result is ignored', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 1, maxDelayMs: 0, maxQueue: 10, deadlineMs: 100 }, runner, observer);
    const first = b.submit(image(1), [3, 4, 4], 1);
    const second = b.submit(image(2), [3, 4, 4], 1);
    const firstErr = first.catch((e: unknown) => e);
    const secondErr = second.catch((e: unknown) => e);
    expect(b.depth).toBe(1);
    await vi.advanceTimersByTimeAsync(101);
    expect(((await secondErr) as ServeError).code).toBe('deadline_exceeded');
    expect(((await firstErr) as ServeError).code).toBe('deadline_exceeded');
    expect(b.depth).toBe(0);
    runner.finish(); // the first one's result arrives after its deadline: nothing breaks
    await settle();
    expect(runner.batches).toHaveLength(1);
  });

  it('an aborted request leaves the queue', async () => {
    const runner = new FakeRunner();
    runner.size = 0;
    const b = new Batcher({ maxBatch: 4, maxDelayMs: 0, maxQueue: 10, deadlineMs: 10_000 }, runner, observer);
    const ac = new AbortController();
    const p = b.submit(image(1), [3, 4, 4], 1, ac.signal).catch((e: unknown) => e);
    expect(b.depth).toBe(1);
    ac.abort();
    expect(b.depth).toBe(0);
    expect(await p).toBeInstanceOf(ServeError);
  });

  it('a failed batch rejects its requests only; the next batch runs', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 1, maxDelayMs: 0, maxQueue: 10, deadlineMs: 10_000 }, runner, observer);
    const p1 = b.submit(image(1), [3, 4, 4], 1).catch((e: Error) => e.message);
    const p2 = b.submit(image(2), [3, 4, 4], 1);
    runner.fail();
    expect(await p1).toBe('boom');
    await settle();
    runner.finish();
    expect((await p2).outputs[0].data[0]).toBe(2);
  });

  it('drain() resolves once nothing is queued or running', async () => {
    const runner = new FakeRunner();
    const b = new Batcher({ maxBatch: 1, maxDelayMs: 0, maxQueue: 10, deadlineMs: 10_000 }, runner, observer);
    const ps = [b.submit(image(1), [3, 4, 4], 1), b.submit(image(2), [3, 4, 4], 1)];
    let drained = false;
    void b.drain().then(() => (drained = true));
    runner.finish();
    await settle();
    expect(drained).toBe(false);
    runner.finish();
    await Promise.all(ps);
    await settle();
    expect(drained).toBe(true);
  });

  it('a request with more images than maxBatch is a client error', async () => {
    const b = new Batcher({ maxBatch: 2, maxDelayMs: 0, maxQueue: 10, deadlineMs: 10_000 }, new FakeRunner(), observer);
    const err = (await b.submit(new Float32Array(3 * 48), [3, 4, 4], 3).catch((e: unknown) => e)) as ServeError;
    expect(err.status).toBe(400);
  });
});
