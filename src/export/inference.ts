// Export of an inference model: build the network, load weights if given, fold BatchNorm, write ONNX.

import type { ResNetConfig } from '../models/config.js';
import type { Preprocessing } from '../models/labels.js';
import { buildResNet } from '../models/preact.js';
import { type Graph, parameterCount } from '../graph/graph.js';
import { packageVersion } from '../util/paths.js';
import { foldBatchNorms } from './fold.js';
import { docString, modelMetadata } from './metadata.js';
import { DEFAULT_OPSET, type WriteOptions, checkOpset, writeOnnx, writeOnnxAsync } from './onnx.js';
import { checkpointPreprocessing, loadWeights } from './weights.js';

export interface InferenceExportOptions {
  output: string;
  seed?: number;
  /** A checkpoint (safetensors) written by this project. */
  weights?: string;
  /** Fold BatchNormalization into the preceding Conv (default true). */
  fold?: boolean;
  opset?: number;
  probabilities?: boolean;
  progress?: (written: number, total: number) => void;
}

export interface ExportReport {
  path: string;
  bytes: number;
  parameters: number;
  nodes: number;
  foldedBatchNorms: number;
  weights: string;
}

/**
 * Builds the inference graph, with weights and folding applied, ready to write. With weights, `preprocessing` is
 * what their checkpoint states (see checkpointPreprocessing), as `export --weights` without architecture flags
 * states it; `cfg` then comes from the architecture flags, and a checkpoint whose preprocessing conflicts is refused.
 */
export function inferenceGraph(cfg: ResNetConfig, o: Omit<InferenceExportOptions, 'output'>): { graph: Graph; weights: string; folded: number; preprocessing?: Preprocessing } {
  let graph = buildResNet(cfg, { seed: o.seed ?? 0, probabilities: o.probabilities });
  let weights = `random-init (seed ${o.seed ?? 0})`;
  let preprocessing: Preprocessing | undefined;
  if (o.weights) {
    const loaded = loadWeights(graph, o.weights);
    graph = loaded.graph;
    weights = loaded.status;
    preprocessing = checkpointPreprocessing(loaded, o.weights, cfg, 'the architecture flags');
  }
  let folded = 0;
  if (o.fold ?? true) {
    const r = foldBatchNorms(graph);
    graph = r.graph;
    folded = r.folded.length;
  }
  return { graph, weights, folded, ...(preprocessing ? { preprocessing } : {}) };
}

/** The graph to write and its file's fields; shared by the synchronous and the asynchronous export. */
function prepareExport(cfg: ResNetConfig, o: InferenceExportOptions): { graph: Graph; write: WriteOptions; report: Omit<ExportReport, 'bytes'> } {
  const opset = o.opset ?? DEFAULT_OPSET;
  checkOpset(opset);
  const params = parameterCount(buildResNet(cfg));
  const { graph, weights, folded, preprocessing } = inferenceGraph(cfg, o);
  const desc = { weights, folded: folded > 0, preprocessing };
  return {
    graph,
    write: { opset, docString: docString(cfg, desc), metadata: modelMetadata(cfg, desc), producerVersion: packageVersion(), progress: o.progress },
    report: { path: o.output, parameters: params, nodes: graph.nodes.length, foldedBatchNorms: folded, weights },
  };
}

export function exportInference(cfg: ResNetConfig, o: InferenceExportOptions): ExportReport {
  const { graph, write, report } = prepareExport(cfg, o);
  return { ...report, bytes: writeOnnx(graph, o.output, write) };
}

/** As exportInference, yielding to the event loop between tensors, so that an interrupt stops it promptly. */
export async function exportInferenceAsync(cfg: ResNetConfig, o: InferenceExportOptions): Promise<ExportReport> {
  const { graph, write, report } = prepareExport(cfg, o);
  return { ...report, bytes: await writeOnnxAsync(graph, o.output, write) };
}
