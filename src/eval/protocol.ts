// Messages between eval's main thread and its inference worker (src/eval/worker.ts).

export interface EvalWorkerInit {
  modelPath: string;
  threads: number;
  /** Let onnxruntime's threads spin between runs: faster when nothing else needs the cores. */
  spinning: boolean;
}

export type EvalToWorker = { type: 'run'; id: number; data: Float32Array; dims: number[] } | { type: 'close' };

export type EvalFromWorker =
  | { type: 'ready'; inputName: string; inputShape: (number | string)[]; outputName: string; outputShape: (number | string)[] }
  | { type: 'result'; id: number; dims: number[]; scores: Float32Array; ms: number }
  | { type: 'error'; id: number; message: string }
  | { type: 'fatal'; message: string };
