// The data worker thread: opens the dataset once, then produces batches ahead of the trainer as credits allow.

import { parentPort, workerData } from 'node:worker_threads';
import { openDataset } from './datasets.js';
import { prepare, produceBatch, serializeError, type FromLoaderWorker, type LoaderWorkerInit, type Producer, type ToLoaderWorker } from './loader.js';

const port = parentPort;
if (!port) throw new Error('loader-worker.ts runs as a worker thread (started by BatchLoader.open)');
const { options } = workerData as LoaderWorkerInit;

const post = (m: FromLoaderWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);

let credit = options.prefetch ?? 3;
let closed = false;
let wake: (() => void) | undefined;

port.on('message', (m: ToLoaderWorker) => {
  if (m.type === 'credit') credit += m.n;
  else closed = true;
  wake?.();
});

async function run(): Promise<void> {
  let producer: Producer;
  try {
    producer = await prepare(options, openDataset);
  } catch (e) {
    post({ type: 'error', error: serializeError(e) });
    return;
  }
  post({ type: 'ready', info: producer.info });
  let iteration = options.startIteration ?? 0;
  while (!closed) {
    if (credit <= 0) {
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
      continue;
    }
    try {
      const batch = await produceBatch(producer, iteration);
      credit--;
      iteration++;
      // Transferred, not copied: the buffers move to the main thread.
      post({ type: 'batch', batch }, [batch.input.buffer as ArrayBuffer, batch.labels.buffer as ArrayBuffer, batch.indices.buffer as ArrayBuffer]);
    } catch (e) {
      post({ type: 'error', error: serializeError(e) });
      return;
    }
    // Let credit and close messages in between batches of the synchronous in-memory path.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

void run();
