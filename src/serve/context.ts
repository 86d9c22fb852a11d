// What every route of one running server shares: the model, its queue, limits, metrics and state.

import type { Logger } from 'pino';
import type { Batcher } from './batcher.js';
import { ServeError, unavailable } from './errors.js';
import type { Metrics } from './metrics.js';
import type { ModelInfo } from './model-info.js';
import type { ModelSignature } from './pool.js';
import type { ImageLimits } from './preprocess.js';
import type { Semaphore } from './semaphore.js';

export interface ServeLimits extends ImageLimits {
  /** Largest request body for an image (raw or multipart). */
  maxBodyBytes: number;
  /** Largest JSON body (KServe tensors in JSON are ~10 bytes per number). */
  maxJsonBytes: number;
  maxBatch: number;
}

export interface ServeState {
  /** The workers have loaded the model and run a warm-up batch. */
  ready: boolean;
  /** SIGTERM (or close()) received: finishing what is in flight, refusing new work. */
  draining: boolean;
  /** Why the model could not be loaded, if it could not. */
  failed?: string;
}

export interface ServeContext {
  info: ModelInfo;
  /** Known once the first worker has loaded the model. */
  signature?: ModelSignature;
  /** Labels from the metadata, or class_<i> names when the model has none. */
  labels: string[];
  batcher: Batcher;
  decodeSlots: Semaphore;
  limits: ServeLimits;
  metrics: Metrics;
  log: Logger;
  state: ServeState;
  version: string;
}

/** Throws the 503 a request gets while the server is loading, failed, or shutting down. */
export function assertServing(ctx: ServeContext): void {
  if (ctx.state.draining) throw unavailable('shutting_down', 'the server is shutting down; retry on another instance', 5);
  if (ctx.state.failed) throw new ServeError(503, 'not_ready', `the model could not be loaded: ${ctx.state.failed}`);
  if (!ctx.state.ready || !ctx.signature) throw unavailable('not_ready', 'the model is still loading; retry shortly', 2);
}

/** The note every response about a random-init model carries. */
export function weightsWarning(info: ModelInfo): string | undefined {
  if (!info.randomWeights) return undefined;
  const hint = info.weightsHint ? `; ${info.weightsHint}` : '';
  return `this model's weights are ${info.weights}: it has not been trained, so its labels and probabilities mean nothing${hint}`;
}
