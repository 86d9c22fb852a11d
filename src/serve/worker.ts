// Inference worker thread: owns one onnxruntime session and runs the batches the main thread sends, so that
// InferenceSession.run (which blocks its thread for the whole inference) never stalls the HTTP event loop.

import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { ProviderError, createProviderSession, describePlacement } from '../util/providers.js';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.js';

const init = workerData as WorkerInit;
const port = parentPort;
if (!port) throw new Error('src/serve/worker.ts must run as a worker thread');

const post = (m: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);

async function start(): Promise<ort.InferenceSession> {
  // On a GPU provider the warm-up run is profiled, to say where each node ran.
  const { session, placement } = await createProviderSession(init.modelPath, init.ep, {
    intraOpNumThreads: init.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // No busy-waiting threads: the cores are shared with image decoding and HTTP (a rough test on 2 cores:
    // ~40% less inference throughput with spinning on while sharp resized images alongside).
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  }, init.ep !== 'cpu');
  const input = session.inputNames[0];
  const meta = session.inputMetadata[0];
  const outMeta = session.outputMetadata;
  const shapeOf = (m: ort.InferenceSession.ValueMetadata): (number | string)[] => (m.isTensor ? m.shape.map((d) => d) : []);
  // Warm-up: the first run at a shape plans memory and picks kernels; do it before saying ready.
  const started = performance.now();
  const x = new ort.Tensor('float32', new Float32Array(init.warmupDims.reduce((a, b) => a * b, 1)), init.warmupDims);
  await session.run({ [input]: x });
  const nodes = placement?.();
  post({
    type: 'ready',
    inputName: input,
    inputShape: shapeOf(meta),
    outputs: session.outputNames.map((name, i) => ({ name, shape: shapeOf(outMeta[i]) })),
    warmupMs: performance.now() - started,
    ...(nodes ? { placement: { nodes, line: describePlacement(nodes, init.ep) } } : {}),
  });
  return session;
}

const ready = start().catch((e: Error) => {
  post({ type: 'fatal', message: e instanceof ProviderError ? e.message : `cannot load ${init.modelPath}: ${e.message}` });
  return undefined;
});

port.on('message', (m: ToWorker) => {
  void ready.then(async (session) => {
    if (!session) return;
    if (m.type === 'close') {
      await session.release();
      port.close();
      return;
    }
    const started = performance.now();
    try {
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', m.data, m.dims) });
      const outputs = session.outputNames.map((name) => {
        const t = out[name];
        // A copy we own, so its buffer can be transferred rather than cloned.
        return { name, dims: [...t.dims], data: (t.data as Float32Array).slice() };
      });
      post({ type: 'result', id: m.id, outputs, ms: performance.now() - started }, outputs.map((o) => o.data.buffer as ArrayBuffer));
    } catch (e) {
      post({ type: 'error', id: m.id, message: (e as Error).message });
    }
  });
});
