// Calibration and the quantisation report: run a model with chosen intermediate values exposed as graph outputs
// (onnxruntime-node) over the calibration images, and reduce each value batch by batch: ranges for the u8
// parameters, or the signal-to-quantisation-noise ratio of each conv output between the float and int8 models.

import * as ort from 'onnxruntime-node';
import type { OnnxTypes } from '../export/proto.js';
import type { CalibrationSet } from './calibration-data.js';
import { type ModelProto, encodeModel } from './onnx-model.js';
import { type Method, type QParams, type Range, collector, fakeQuantise } from './params.js';
import { type Plan, QNAME } from './qdq.js';

export interface RunOptions {
  /** Images per run (default: 64 for crops up to 64 pixels, else 1: exposed values of a big net are large). */
  batch?: number;
  threads?: number;
  /** Called after each batch with the images done so far. */
  onProgress?: (done: number) => void;
}

/** The model with `values` added to its outputs (element type given; shapes left to the runtime). */
function exposing(m: ModelProto, values: readonly string[], elemType: number): ModelProto {
  const have = new Set((m.graph!.output ?? []).map((o) => o.name));
  const extra: OnnxTypes.IValueInfoProto[] = values.filter((v) => !have.has(v)).map((name) => ({ name, type: { tensorType: { elemType } } }));
  return { ...m, graph: { ...m.graph, output: [...(m.graph!.output ?? []), ...extra] } } as ModelProto;
}

async function session(m: ModelProto, threads?: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(m), {
    ...(threads ? { intraOpNumThreads: threads } : {}),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

function defaultBatch(crop: number): number {
  return crop <= 64 ? 64 : 1;
}

/** A value the float model cannot be quantised on (an overflowing network); exit 1 with what was found. */
export class CalibrationError extends Error {
  override name = 'CalibrationError';
}

/**
 * The range of each of `values` over the calibration set, by `method`. `batch` images per run. Returns the ranges
 * and the number of images used (files that do not decode are skipped by the set).
 */
export async function calibrate(m: ModelProto, values: readonly string[], set: CalibrationSet, method: Method, o: RunOptions & { crop: number }): Promise<{ ranges: Map<string, Range>; images: number }> {
  const s = await session(exposing(m, values, 1), o.threads);
  const input = s.inputNames[0];
  const collectors = new Map(values.map((v) => [v, collector(method)]));
  let images = 0;
  try {
    for await (const b of set.batches(o.batch ?? defaultBatch(o.crop))) {
      const out = await s.run({ [input]: new ort.Tensor('float32', b.data, b.dims) }, [...values]);
      for (const v of values) collectors.get(v)!.add(out[v].data as Float32Array);
      for (const t of Object.values(out)) t.dispose();
      images += b.dims[0];
      o.onProgress?.(images);
    }
  } finally {
    await s.release();
  }
  const ranges = new Map<string, Range>();
  for (const [v, c] of collectors) {
    const r = c.range();
    if (!Number.isFinite(r.min) || !Number.isFinite(r.max))
      throw new CalibrationError(`the float model's value ${v} reaches ${r.min} .. ${r.max} on the calibration images: a network whose activations overflow float32 cannot be quantised (train or load weights first)`);
    ranges.set(v, r);
  }
  return { ranges, images };
}

export interface LayerSqnr {
  /** The conv node, e.g. `stage2.unit1.conv1`. */
  conv: string;
  /** The value compared: the conv's output, or its ReLU's when a ReLU alone reads it. */
  value: string;
  /** SQNR (dB) in the int8 model: the float model's value against the int8 model's, all earlier layers quantised. */
  sqnr: number;
  /** SQNR (dB) of this value's own u8 rounding alone (the float value against itself quantised). */
  ownSqnr: number;
  params: QParams;
}

const dB = (signal: number, noise: number): number => (noise === 0 ? Infinity : 10 * Math.log10(signal / noise));

/**
 * Per-conv SQNR over the calibration set: the float model and the int8 model run side by side, each conv's
 * output (as the next layer reads it) compared. Sorted worst first.
 */
export async function sqnrReport(float: ModelProto, int8: ModelProto, plan: Plan, params: ReadonlyMap<string, QParams>, set: CalibrationSet, o: RunOptions & { crop: number }): Promise<LayerSqnr[]> {
  const layers = plan.convs.map((c) => ({ conv: c.name || c.output![0], value: plan.convOutputs.get(c)! }));
  const fs = await session(exposing(float, layers.map((l) => l.value), 1), o.threads);
  const qs = await session(exposing(int8, layers.map((l) => l.value + QNAME.quantised), 2), o.threads);
  const acc = layers.map(() => ({ signal: 0, noise: 0, own: 0 }));
  let images = 0;
  try {
    for await (const b of set.batches(o.batch ?? defaultBatch(o.crop))) {
      const feed = (s: ort.InferenceSession): Record<string, ort.Tensor> => ({ [s.inputNames[0]]: new ort.Tensor('float32', b.data, b.dims) });
      const fo = await fs.run(feed(fs), layers.map((l) => l.value));
      const qo = await qs.run(feed(qs), layers.map((l) => l.value + QNAME.quantised));
      layers.forEach((l, k) => {
        const x = fo[l.value].data as Float32Array;
        const q = qo[l.value + QNAME.quantised].data as Uint8Array;
        const p = params.get(l.value)!;
        const a = acc[k];
        for (let i = 0; i < x.length; i++) {
          const xi = x[i];
          const d = xi - (q[i] - p.zeroPoint) * p.scale;
          const e = xi - fakeQuantise(xi, p);
          a.signal += xi * xi;
          a.noise += d * d;
          a.own += e * e;
        }
      });
      for (const t of [...Object.values(fo), ...Object.values(qo)]) t.dispose();
      images += b.dims[0];
      o.onProgress?.(images);
    }
  } finally {
    await fs.release();
    await qs.release();
  }
  return layers
    .map((l, k) => ({ ...l, sqnr: dB(acc[k].signal, acc[k].noise), ownSqnr: dB(acc[k].signal, acc[k].own), params: params.get(l.value)! }))
    .sort((x, y) => x.sqnr - y.sqnr);
}
