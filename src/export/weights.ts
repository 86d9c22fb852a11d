// Moving weights between a graph and a checkpoint file (safetensors, names = the graph's parameter names).

import { basename } from 'node:path';
import type { Graph, Initializer } from '../graph/graph.js';
import { floatTensor } from '../graph/types.js';
import { type ResNetConfig, describe } from '../models/config.js';
import { type Preprocessing, datasetPreprocessing } from '../models/labels.js';
import { META, MeanImageError, parsePreprocessing, perPixelPreprocessing } from './metadata.js';
import { CheckpointError, SafeTensorsFile, type TensorToSave, writeSafeTensors, writeSafeTensorsAsync } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'resnet-onnx-checkpoint/1';

/**
 * The mean image of a `--normalise per-pixel` run ([C, H, W], pixel values), stored with the state so a resumed run
 * subtracts the very same values and an export states it. The `#` marks it as not part of the network, like the
 * momentum buffers.
 */
export const MEAN_IMAGE = 'input#mean_image';

/** The tensors a checkpoint of this graph holds: parameters and BN running statistics, not constants. */
export function checkpointTensors(g: Graph): Initializer[] {
  return g.initializers.filter((i) => i.role !== 'constant');
}

export interface LoadedWeights {
  graph: Graph;
  /** Text for the model's `weights` metadata, e.g. "checkpoint: run1.safetensors" or the checkpoint's own. */
  status: string;
  metadata: Readonly<Record<string, string>>;
  /** The checkpoint's per-pixel mean image (MEAN_IMAGE), when its run subtracted one. */
  meanImage?: { values: Float32Array; shape: readonly number[] };
}

/**
 * Replaces the graph's parameters and buffers by those of a checkpoint. Every tensor must be present with the
 * same shape, and the file may hold nothing else; the first that does not fit is named in the error.
 * Values are read lazily, when the model is written.
 */
export function loadWeights(g: Graph, path: string): LoadedWeights {
  const file = SafeTensorsFile.open(path);
  const wanted = checkpointTensors(g);
  const names = new Set(wanted.map((i) => i.name));
  for (const init of wanted) {
    const e = file.tensors.get(init.name);
    if (!e) throw new CheckpointError(`${path} does not fit this network: tensor '${init.name}' [${init.data.dims.join(', ')}] is missing`);
    const same = e.shape.length === init.data.dims.length && e.shape.every((d, i) => d === init.data.dims[i]);
    if (!same) throw new CheckpointError(`${path} does not fit this network: tensor '${init.name}' is [${e.shape.join(', ')}] in the file, [${init.data.dims.join(', ')}] in the network`);
    if (!['F32', 'F64', 'F16', 'BF16'].includes(e.dtype)) throw new CheckpointError(`${path}: tensor '${init.name}' is ${e.dtype}; a floating-point tensor is needed`);
  }
  for (const name of file.tensors.keys()) {
    // Optimiser state lives beside the weights in training checkpoints; it is not part of the network.
    if (!names.has(name) && !name.includes('#')) throw new CheckpointError(`${path} does not fit this network: it has tensor '${name}', which the network does not have`);
  }
  const initializers = g.initializers.map((init) =>
    init.role === 'constant' ? init : { ...init, data: floatTensor(init.data.dims, () => file.readFloat32(init.name)) },
  );
  const status = file.metadata.weights ?? `checkpoint: ${basename(path)}`;
  const meanImage = meanImageOf(file);
  return { graph: { ...g, initializers }, status, metadata: file.metadata, ...(meanImage ? { meanImage } : {}) };
}

/** The checkpoint's per-pixel mean image (MEAN_IMAGE), if its run subtracted one. */
export function meanImageOf(file: SafeTensorsFile): LoadedWeights['meanImage'] {
  const mean = file.tensors.get(MEAN_IMAGE);
  return mean ? { values: file.readFloat32(MEAN_IMAGE), shape: mean.shape } : undefined;
}

/**
 * The preprocessing a checkpoint's weights expect, the same whichever way their network was chosen (the config the
 * checkpoint records, or architecture flags): its `preprocessing` metadata (`import --save-weights` writes it),
 * else the dataset's default, with a per-pixel run's mean image (MEAN_IMAGE) on top. `name` is the file in
 * errors; `network` says where `cfg` came from (e.g. "the architecture flags"). A record that does not fit the
 * network is refused with what the file states and what the network takes.
 */
export function checkpointPreprocessing(ck: Pick<LoadedWeights, 'metadata' | 'meanImage'>, name: string, cfg: ResNetConfig, network: string): Preprocessing {
  const text = ck.metadata[META.preprocessing];
  const recorded = text !== undefined ? parsePreprocessing(text, `${name}: metadata '${META.preprocessing}'`) : undefined;
  const base = recorded ?? datasetPreprocessing(cfg.dataset);
  const channels = base.channelOrder === 'L' ? 1 : 3;
  if (recorded && channels !== cfg.inChannels)
    throw new CheckpointError(`${name}: metadata '${META.preprocessing}' states ${base.channelOrder} input (${channels} channel${channels === 1 ? '' : 's'}), but the network from ${network}, ${describe(cfg)}, takes ${cfg.inChannels}-channel input`);
  if (!ck.meanImage) return base;
  try {
    return perPixelPreprocessing(base, ck.meanImage.values, ck.meanImage.shape);
  } catch (e) {
    if (!(e instanceof MeanImageError)) throw e;
    const against = recorded ? `its metadata '${META.preprocessing}'` : `the default preprocessing of ${cfg.dataset} (the network from ${network}, ${describe(cfg)})`;
    throw new CheckpointError(`${name}: tensor '${MEAN_IMAGE}' [${ck.meanImage.shape.join(', ')}] does not fit ${against}: ${e.message}`);
  }
}

function tensorsToSave(g: Graph): TensorToSave[] {
  return checkpointTensors(g).map((i) => ({ name: i.name, shape: i.data.dims, values: () => i.data.values() as Float32Array }));
}

/** Writes the graph's parameters and buffers as a safetensors checkpoint. */
export function saveWeights(g: Graph, path: string, metadata: Readonly<Record<string, string>> = {}): void {
  writeSafeTensors(path, tensorsToSave(g), { format: CHECKPOINT_FORMAT, ...metadata });
}

/** As saveWeights, yielding to the event loop between tensors (an interrupt stops it promptly). */
export async function saveWeightsAsync(g: Graph, path: string, metadata: Readonly<Record<string, string>> = {}): Promise<void> {
  await writeSafeTensorsAsync(path, tensorsToSave(g), { format: CHECKPOINT_FORMAT, ...metadata });
}
