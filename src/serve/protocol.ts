// Messages between the server's main thread and its inference workers (src/serve/worker.ts).

import type { ExecutionProvider, Placement } from '../util/providers.js';

export interface WorkerInit {
  modelPath: string;
  intraOpThreads: number;
  /** onnxruntime's provider for the session; a GPU one that cannot start is fatal (no CPU fallback). */
  ep: ExecutionProvider;
  /** Input dims of the warm-up run, e.g. [1, 3, 320, 320]. */
  warmupDims: number[];
}

export type ToWorker = { type: 'run'; id: number; data: Float32Array; dims: number[] } | { type: 'close' };

export interface OutputTensor {
  name: string;
  dims: number[];
  data: Float32Array;
}

export type FromWorker =
  /** `placement`: GPU providers only, where each node of the warm-up run ran (and the line saying so). */
  | { type: 'ready'; inputName: string; inputShape: (number | string)[]; outputs: { name: string; shape: (number | string)[] }[]; warmupMs: number; placement?: { nodes: Placement; line: string } }
  | { type: 'result'; id: number; outputs: OutputTensor[]; ms: number }
  | { type: 'error'; id: number; message: string }
  | { type: 'fatal'; message: string };
