// Evaluation's inference worker: owns one onnxruntime session and runs the batches eval sends, so that the main
// thread decodes and preprocesses the next batch while this one runs (InferenceSession.run blocks its thread).

import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { EvalFromWorker, EvalToWorker, EvalWorkerInit } from './protocol.js';

const init = workerData as EvalWorkerInit;
const port = parentPort;
if (!port) throw new Error('src/eval/worker.ts must run as a worker thread');

const post = (m: EvalFromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);

async function start(): Promise<{ session: ort.InferenceSession; input: string; output: string }> {
  const session = await ort.InferenceSession.create(init.modelPath, {
    intraOpNumThreads: init.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // Spinning threads steal the cores that decode images; with data already in memory there is nothing to steal.
    extra: { session: { intra_op: { allow_spinning: init.spinning ? '1' : '0' }, inter_op: { allow_spinning: '0' } } },
  });
  const input = session.inputNames[0];
  // Our models name their scores `logits`; a model with only other outputs is scored on its first one.
  const output = session.outputNames.includes('logits') ? 'logits' : session.outputNames[0];
  const shapeOf = (m: ort.InferenceSession.ValueMetadata): (number | string)[] => (m.isTensor ? [...m.shape] : []);
  const outMeta = session.outputMetadata[session.outputNames.indexOf(output)];
  post({ type: 'ready', inputName: input, inputShape: shapeOf(session.inputMetadata[0]), outputName: output, outputShape: shapeOf(outMeta) });
  return { session, input, output };
}

const ready = start().catch((e: Error) => {
  post({ type: 'fatal', message: `onnxruntime cannot load ${init.modelPath}: ${e.message}` });
  return undefined;
});

// Runs one after another, in the order sent: eval queues the next batch while this one runs.
let queue: Promise<unknown> = ready;
port.on('message', (m: EvalToWorker) => {
  queue = queue.then(() => ready).then(async (s) => {
    if (!s) return;
    if (m.type === 'close') {
      await s.session.release();
      port.close();
      return;
    }
    const started = performance.now();
    try {
      const out = await s.session.run({ [s.input]: new ort.Tensor('float32', m.data, m.dims) });
      const t = out[s.output];
      // A copy we own, so that its buffer can be transferred rather than cloned.
      const scores = (t.data as Float32Array).slice();
      post({ type: 'result', id: m.id, dims: [...t.dims], scores, ms: performance.now() - started }, [scores.buffer as ArrayBuffer]);
    } catch (e) {
      post({ type: 'error', id: m.id, message: (e as Error).message });
    }
  });
});
