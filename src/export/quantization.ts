// The `quantization` metadata record of an int8 model (written by `resnet-onnx quantize`), and how the commands
// that read models (info, eval, serve) say what it holds.

/** Metadata key of the record (JSON). A model without it is float32. */
export const QUANTIZATION_KEY = 'quantization';

export interface QuantizationRecord {
  /** e.g. `QDQ (QuantizeLinear / DequantizeLinear), opset 17`. */
  format: string;
  /** Value types and granularity, e.g. `u8 activations (per tensor, asymmetric), s8 weights (...), int32 biases`. */
  scheme: string;
  weightBits: 7 | 8;
  /** `minmax` or `percentile 99.99`. */
  method: string;
  calibration: { data: string; path: string; images: number; seed: number; skipped: number };
  /** Where the pre-activation structure is quantised (see src/quantize/qdq.ts, Arrangement). */
  arrangement: { residual: 'float' | 'int8'; preact: 'float' | 'int8'; fc: 'float' | 'int8' };
  /** The float model it was made from. */
  from: { file: string; bytes: number };
  tool: string;
}

/** The record in a model's metadata, or undefined for a float model (or a record that is not JSON). */
export function quantizationOf(metadata: Readonly<Record<string, string>>): Partial<QuantizationRecord> | undefined {
  const text = metadata[QUANTIZATION_KEY];
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Partial<QuantizationRecord>) : {};
  } catch {
    return {};
  }
}

/** `float32`, or `int8` for a model with a quantization record. */
export function precisionOf(metadata: Readonly<Record<string, string>>): 'float32' | 'int8' {
  return metadata[QUANTIZATION_KEY] === undefined ? 'float32' : 'int8';
}

/** One line for people: `int8 (QDQ ...; u8 activations ...; percentile 99.99 calibration on 512 images of ...; from X.onnx)`. */
export function describeQuantization(metadata: Readonly<Record<string, string>>): string | undefined {
  const r = quantizationOf(metadata);
  if (r === undefined) return undefined;
  const parts = [r.format, r.scheme, r.method && r.calibration ? `${r.method} calibration on ${r.calibration.images} images of ${r.calibration.data}` : undefined, r.from?.file ? `from ${r.from.file}` : undefined];
  const said = parts.filter((p): p is string => typeof p === 'string' && p.length > 0);
  return said.length > 0 ? `int8 (${said.join('; ')})` : 'int8';
}
