// Prometheus metrics of one server (its own registry, so several servers can live in one process, e.g. tests).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BatchObserver } from './batcher.js';
import type { ErrorCode } from './errors.js';

export interface Metrics {
  registry: Registry;
  requests: Counter<'route' | 'method' | 'status'>;
  latency: Histogram<'route' | 'method'>;
  decode: Histogram;
  rejected: Counter<'reason'>;
  observer: BatchObserver;
}

export function createMetrics(maxBatch: number, modelName: string, weights: string): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'http_requests_total', help: 'HTTP requests answered, by route, method and status', labelNames: ['route', 'method', 'status'] as const, registers: [registry] });
  const latency = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time from request to response, by route',
    labelNames: ['route', 'method'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const decode = new Histogram({ name: 'image_decode_seconds', help: 'Decode, resize, crop and normalise of one image', buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers: [registry] });
  const queueDepth = new Gauge({ name: 'inference_queue_depth', help: 'Images waiting for an inference worker', registers: [registry] });
  const queueWait = new Histogram({ name: 'inference_queue_wait_seconds', help: 'Time an image waited in the queue before its batch started', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] });
  const batchBuckets = [...new Set([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64].filter((b) => b < maxBatch).concat(maxBatch))];
  const batchSize = new Histogram({ name: 'inference_batch_size', help: 'Images per batch actually run by the network (dynamic batching)', buckets: batchBuckets, registers: [registry] });
  const inference = new Histogram({ name: 'inference_duration_seconds', help: 'onnxruntime run time of one batch', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] });
  const rejected = new Counter({ name: 'inference_rejected_total', help: 'Requests refused by bounded work: overloaded, deadline_exceeded, ...', labelNames: ['reason'] as const, registers: [registry] });
  const info = new Gauge({ name: 'model_info', help: 'The model served; weights says whether they are trained (random-init means the labels mean nothing)', labelNames: ['model', 'weights'] as const, registers: [registry] });
  info.set({ model: modelName, weights }, 1);
  const observer: BatchObserver = {
    batch: (size, ms) => {
      batchSize.observe(size);
      inference.observe(ms / 1000);
    },
    queueDepth: (n) => queueDepth.set(n),
    queueWait: (ms) => queueWait.observe(ms / 1000),
    rejected: (code: ErrorCode) => rejected.inc({ reason: code }),
  };
  return { registry, requests, latency, decode, rejected, observer };
}
