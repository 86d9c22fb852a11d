// Quantisation arithmetic: u8 activation parameters from a calibrated range, per-channel symmetric s8 weights,
// int32 biases, and the range collectors calibration feeds (min-max, and a histogram for percentiles).

export interface Range {
  min: number;
  max: number;
}

/** An affine u8 (or s8 / int32) parameter pair: real = scale * (q - zeroPoint). */
export interface QParams {
  scale: number;
  zeroPoint: number;
}

/**
 * u8 parameters covering [min, max], widened to hold 0 exactly (padding and ReLU need a real zero). A ReLU
 * output's range starts at 0, so its zero point is 0. Scales are float32, as stored.
 */
export function u8Params(r: Range): QParams {
  const lo = Math.min(r.min, 0);
  const hi = Math.max(r.max, 0);
  if (!(hi > lo) || !Number.isFinite(hi - lo)) return { scale: 1, zeroPoint: 0 };
  const scale = Math.fround((hi - lo) / 255);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/** x -> u8 -> back, as QuantizeLinear then DequantizeLinear compute it (round half to even). */
export function fakeQuantise(x: number, q: QParams): number {
  return (Math.min(255, Math.max(0, roundEven(x / q.scale) + q.zeroPoint)) - q.zeroPoint) * q.scale;
}

const INT32_MAX = 2147483647;

/** Round half to even, as ONNX's QuantizeLinear does. */
function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Per-output-channel symmetric s8 weights ([-127, 127], zero point 0). A channel's scale is raised where its
 * bias would not fit int32 at input scale x weight scale (a tiny weight under a large bias).
 */
export function quantiseWeights(w: Float32Array, channels: number, inputScale: number, bias?: Float32Array, qmax = 127): { values: Int8Array; scales: Float32Array } {
  const per = w.length / channels;
  const values = new Int8Array(w.length);
  const scales = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    let m = 0;
    for (let i = 0; i < per; i++) m = Math.max(m, Math.abs(w[c * per + i]));
    let s = m > 0 ? m / qmax : 1;
    if (bias) s = Math.max(s, (Math.abs(bias[c]) / (Math.fround(inputScale) * INT32_MAX)) * 1.0001);
    scales[c] = s;
    const sc = scales[c];
    for (let i = 0; i < per; i++) values[c * per + i] = Math.max(-qmax, Math.min(qmax, roundEven(w[c * per + i] / sc)));
  }
  return { values, scales };
}

/** int32 biases at scale inputScale x weightScale[c] (float32 product, as onnxruntime computes it). */
export function quantiseBias(b: Float32Array, inputScale: number, weightScales: Float32Array): { values: Int32Array; scales: Float32Array } {
  const values = new Int32Array(b.length);
  const scales = new Float32Array(b.length);
  for (let c = 0; c < b.length; c++) {
    scales[c] = Math.fround(Math.fround(inputScale) * weightScales[c]);
    values[c] = Math.max(-INT32_MAX, Math.min(INT32_MAX, roundEven(b[c] / scales[c])));
  }
  return { values, scales };
}

export type Method = { kind: 'minmax' } | { kind: 'percentile'; percentile: number };

/** Collects what a method needs from each batch of a value, then says the range. */
export interface RangeCollector {
  add(values: Float32Array): void;
  range(): Range;
}

export class MinMax implements RangeCollector {
  min = Infinity;
  max = -Infinity;
  add(v: Float32Array): void {
    let lo = this.min;
    let hi = this.max;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
    this.min = lo;
    this.max = hi;
  }
  range(): Range {
    return Number.isFinite(this.min) ? { min: this.min, max: this.max } : { min: 0, max: 0 };
  }
}

const BINS = 2048;

/**
 * Histograms of the positive values and of the negatives' magnitudes over [0, limit), the limit doubling (and
 * adjacent bins merging) whenever a batch goes past it: one pass, bounded memory, any quantile afterwards.
 */
export class Histogram implements RangeCollector {
  private limit = 0;
  private readonly pos = new Float64Array(BINS);
  private readonly neg = new Float64Array(BINS);
  private zeros = 0;
  private count = 0;
  private readonly minmax = new MinMax();
  constructor(private readonly percentile: number) {}

  private grow(to: number): void {
    if (this.limit === 0) {
      this.limit = to * 1.0001;
      return;
    }
    while (this.limit <= to) {
      for (const h of [this.pos, this.neg]) {
        for (let i = 0; i < BINS / 2; i++) h[i] = h[2 * i] + h[2 * i + 1];
        h.fill(0, BINS / 2);
      }
      this.limit *= 2;
    }
  }

  add(v: Float32Array): void {
    this.minmax.add(v);
    const peak = Math.max(Math.abs(this.minmax.min), Math.abs(this.minmax.max));
    // A network that overflowed has no useful histogram; min-max says what it can.
    if (!Number.isFinite(peak)) return;
    if (peak > 0 && peak >= this.limit) this.grow(peak);
    this.count += v.length;
    if (this.limit === 0) {
      this.zeros += v.length;
      return;
    }
    const k = BINS / this.limit;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (x > 0) this.pos[Math.min(BINS - 1, Math.floor(x * k))]++;
      else if (x < 0) this.neg[Math.min(BINS - 1, Math.floor(-x * k))]++;
      else this.zeros++;
    }
  }

  /** The value below which a share `q` (0..1) of all values lie, read from the bins (upper bin edges). */
  private quantile(q: number): number {
    const target = q * this.count;
    const w = this.limit / BINS;
    let seen = 0;
    for (let i = BINS - 1; i >= 0; i--) {
      seen += this.neg[i];
      if (seen >= target) return -i * w;
    }
    seen += this.zeros;
    if (seen >= target) return 0;
    for (let i = 0; i < BINS; i++) {
      seen += this.pos[i];
      if (seen >= target) return (i + 1) * w;
    }
    return this.limit;
  }

  range(): Range {
    if (this.count === 0) return { min: 0, max: 0 };
    const p = this.percentile / 100;
    const r = this.minmax.range();
    // Never wider than what was seen.
    return { min: Math.max(r.min, Math.min(0, this.quantile(1 - p))), max: Math.min(r.max, Math.max(0, this.quantile(p))) };
  }
}

export function collector(m: Method): RangeCollector {
  return m.kind === 'minmax' ? new MinMax() : new Histogram(m.percentile);
}
