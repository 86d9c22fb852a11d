// What every importer produces (a config in our family plus tensors under our parameter names, each
// remembering where in the source file it came from) and how that becomes a graph and an ONNX file.

import { foldBatchNorms } from '../export/fold.js';
import { docString, modelMetadata } from '../export/metadata.js';
import { DEFAULT_OPSET, checkOpset, writeOnnx } from '../export/onnx.js';
import { saveWeights } from '../export/weights.js';
import { type Graph, parameterCount } from '../graph/graph.js';
import { floatTensor } from '../graph/types.js';
import type { ResNetConfig } from '../models/config.js';
import type { Preprocessing } from '../models/labels.js';
import { buildResNet } from '../models/preact.js';
import { packageVersion } from '../util/paths.js';
import type { ExportReport } from '../export/inference.js';
import { count } from './text.js';

/** A file that cannot be imported: the message names the module path or key and what was expected. */
export class ImportError extends Error {
  override name = 'ImportError';
}

export interface SourceTensor {
  readonly dims: readonly number[];
  /** Produced when the model is written (large files are not held twice). */
  readonly values: () => Float32Array;
  /** Where it is in the source: a module path (`model.modules[5].modules[1].weight`) or a key. */
  readonly from: string;
}

export interface ImportedNet {
  cfg: ResNetConfig;
  /** Keyed by our parameter names (`stage2.unit1.conv1.weight`). */
  tensors: Map<string, SourceTensor>;
  /** What the weights are, for the `weights` metadata: "imported: resnet-200.t7 (fb.resnet.torch, Lua Torch .t7)". */
  weights: string;
  /** Where they came from, for the `source` metadata. */
  source: string;
  preprocessing: Preprocessing;
  labels?: string[];
}

/** The network of `net.cfg` with the imported tensors in place of its initial values (BN not folded). */
export function importedGraph(net: ImportedNet, opts: { probabilities?: boolean } = {}): Graph {
  const g = buildResNet(net.cfg, { probabilities: opts.probabilities });
  const used = new Set<string>();
  const initializers = g.initializers.map((init) => {
    if (init.role === 'constant') return init;
    const t = net.tensors.get(init.name);
    if (!t) throw new ImportError(`the file has no tensor for '${init.name}' [${init.data.dims.join(', ')}] of the ${net.cfg.layout ? `${net.cfg.layout.origin} ` : ''}network`);
    const same = t.dims.length === init.data.dims.length && t.dims.every((d, i) => d === init.data.dims[i]);
    if (!same) throw new ImportError(`${t.from} is [${t.dims.join(', ')}], but '${init.name}' of the network is [${init.data.dims.join(', ')}]`);
    used.add(init.name);
    const n = init.data.dims.reduce((p, d) => p * d, 1);
    return {
      ...init,
      data: floatTensor(init.data.dims, () => {
        const v = t.values();
        if (v.length !== n) throw new ImportError(`${t.from} gave ${count(v.length, 'value')}, ${n} expected`);
        return v;
      }),
    };
  });
  for (const [name, t] of net.tensors) if (!used.has(name)) throw new ImportError(`${t.from} (as '${name}') has no place in the network`);
  return { ...g, initializers };
}

export interface ImportExportOptions {
  output: string;
  /** Fold BatchNormalization into the preceding Conv (default true). */
  fold?: boolean;
  opset?: number;
  probabilities?: boolean;
  /** Also write the weights as a resnet-onnx checkpoint (safetensors, our names) that records the config. */
  saveWeights?: string;
  progress?: (written: number, total: number) => void;
  /** More metadata_props entries (e.g. `pretrained`, written by `pull`). */
  metadata?: Readonly<Record<string, string>>;
}

/** What an import wrote: the same report as an export's. */
export type ImportReport = ExportReport;

/** Metadata every model built from imported weights carries, beyond the usual (see README). */
export const SOURCE_KEY = 'source';

export function exportImported(net: ImportedNet, o: ImportExportOptions): ImportReport {
  const opset = o.opset ?? DEFAULT_OPSET;
  checkOpset(opset);
  let graph = importedGraph(net, { probabilities: o.probabilities });
  const parameters = parameterCount(graph);
  if (o.saveWeights) saveWeights(graph, o.saveWeights, checkpointMetadata(net));
  let folded = 0;
  if (o.fold ?? true) {
    const r = foldBatchNorms(graph);
    graph = r.graph;
    folded = r.folded.length;
  }
  const desc = { weights: net.weights, folded: folded > 0, labels: net.labels, preprocessing: net.preprocessing };
  const bytes = writeOnnx(graph, o.output, {
    opset,
    docString: `${docString(net.cfg, desc)}\nSource: ${net.source}.`,
    metadata: { ...modelMetadata(net.cfg, desc), [SOURCE_KEY]: net.source, ...o.metadata },
    producerVersion: packageVersion(),
    progress: o.progress,
  });
  return { path: o.output, bytes, parameters, nodes: graph.nodes.length, foldedBatchNorms: folded, weights: net.weights };
}

/** What a checkpoint written from an import records, so that `export --weights` rebuilds the same model. */
export function checkpointMetadata(net: ImportedNet): Record<string, string> {
  const m: Record<string, string> = {
    config: JSON.stringify(net.cfg),
    weights: net.weights,
    [SOURCE_KEY]: net.source,
    preprocessing: JSON.stringify(net.preprocessing),
  };
  if (net.labels) m.labels = JSON.stringify(net.labels);
  return m;
}
