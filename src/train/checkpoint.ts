// Training checkpoints: every state tensor of the step graph (parameters, momentum buffers, BN running
// statistics) plus where the run stands, in one safetensors file written atomically.

import { CheckpointError, SafeTensorsFile, writeSafeTensors } from '../export/safetensors.js';
import { CHECKPOINT_FORMAT } from '../export/weights.js';
import { type ResNetConfig, configFromJson } from '../models/config.js';

export { MEAN_IMAGE } from '../export/weights.js';

export interface RunState {
  /** Iterations completed. */
  iteration: number;
  seed: number;
  batch: number;
  /** JSON of what must not change on resume (schedule, optimiser, dataset): compared, not trusted blindly. */
  recipe: string;
}

export interface Checkpoint {
  cfg: ResNetConfig;
  run: RunState;
  tensors: Map<string, Float32Array>;
}

export function saveCheckpoint(path: string, cfg: ResNetConfig, run: RunState, tensors: ReadonlyMap<string, Float32Array>, dims: ReadonlyMap<string, readonly number[]>, weights: string): void {
  writeSafeTensors(
    path,
    [...tensors].map(([name, values]) => ({ name, shape: dims.get(name) ?? [values.length], values: () => values })),
    {
      format: CHECKPOINT_FORMAT,
      config: JSON.stringify(cfg),
      iteration: String(run.iteration),
      seed: String(run.seed),
      batch: String(run.batch),
      recipe: run.recipe,
      weights,
    },
  );
}

export function loadCheckpoint(path: string): Checkpoint {
  const file = SafeTensorsFile.open(path);
  try {
    const meta = file.metadata;
    for (const key of ['config', 'iteration', 'seed', 'batch', 'recipe']) {
      if (meta[key] === undefined) throw new CheckpointError(`${path} is not a training checkpoint of this project: metadata '${key}' is missing`);
    }
    const cfg = configFromJson(meta.config, `${path}: config`);
    const num = (key: string): number => {
      const v = Number(meta[key]);
      if (!Number.isSafeInteger(v) || v < 0) throw new CheckpointError(`${path}: metadata '${key}' must be a non-negative integer, got '${meta[key]}'`);
      return v;
    };
    const tensors = new Map<string, Float32Array>();
    for (const name of file.tensors.keys()) tensors.set(name, file.readFloat32(name));
    return { cfg, run: { iteration: num('iteration'), seed: num('seed'), batch: num('batch'), recipe: meta.recipe }, tensors };
  } finally {
    file.close();
  }
}
