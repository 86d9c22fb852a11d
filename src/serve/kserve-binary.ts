// The binary tensor data extension of the Open Inference Protocol (KServe v2 / Triton): a request or response body
// is a JSON header of `Inference-Header-Content-Length` bytes followed by raw little-endian tensor bytes, in the
// order of the tensors whose `parameters.binary_data_size` says how many bytes are theirs.

import { endianness } from 'node:os';
import { ServeError } from './errors.js';

export const HEADER_LENGTH = 'inference-header-content-length';
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

const invalid = (message: string): ServeError => new ServeError(400, 'invalid_tensor', message);
const malformed = (message: string): ServeError => new ServeError(400, 'bad_request', message);

export interface InferBody {
  /** The parsed JSON part (the whole body without the extension). */
  json: unknown;
  /** The bytes after the JSON header; undefined when the request did not use the extension. */
  binary?: Buffer;
}

/** Splits a body into its JSON header and binary tail as `Inference-Header-Content-Length` says. */
export function splitInferBody(body: Buffer, headerLength: string | string[] | undefined): InferBody {
  let jsonBytes = body;
  let binary: Buffer | undefined;
  if (headerLength !== undefined) {
    const text = Array.isArray(headerLength) ? headerLength.join(',') : headerLength;
    if (!/^\d{1,15}$/.test(text.trim())) throw malformed(`Inference-Header-Content-Length must be a byte count (a non-negative integer), got ${JSON.stringify(text)}`);
    const n = Number(text);
    if (n > body.length) throw malformed(`Inference-Header-Content-Length is ${n} but the body has only ${body.length} bytes`);
    jsonBytes = body.subarray(0, n);
    binary = body.subarray(n);
  }
  if (jsonBytes.length === 0) throw malformed(binary ? 'Inference-Header-Content-Length is 0: the JSON inference header is missing' : 'the body is empty; send a JSON inference request');
  let json: unknown;
  try {
    json = JSON.parse(jsonBytes.toString('utf8'));
  } catch (e) {
    throw malformed(`the ${binary ? `first ${jsonBytes.length} bytes (Inference-Header-Content-Length) are` : 'body is'} not valid JSON: ${(e as Error).message}`);
  }
  return { json, binary };
}

/** `parameters.binary_data_size` of a tensor, or undefined when it carries none. */
export function binaryDataSize(parameters: unknown, what: string): number | undefined {
  if (parameters === undefined) return undefined;
  if (parameters === null || typeof parameters !== 'object' || Array.isArray(parameters)) throw invalid(`${what}: parameters must be a JSON object`);
  const size = (parameters as Record<string, unknown>).binary_data_size;
  if (size === undefined) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(`${what}: parameters.binary_data_size must be a non-negative integer (bytes), got ${JSON.stringify(size)}`);
  return size;
}

/** Little-endian float32 bytes as a Float32Array (a copy, aligned); non-finite values are refused like JSON's. */
export function floatsFromLE(bytes: Buffer, what: string): Float32Array {
  if (bytes.length % 4 !== 0) throw invalid(`${what}: ${bytes.length} bytes is not a whole number of FP32 values`);
  const out = new Float32Array(bytes.length / 4);
  const view = new Uint8Array(out.buffer);
  view.set(bytes);
  if (!LITTLE_ENDIAN_HOST) for (let i = 0; i < view.length; i += 4) view.subarray(i, i + 4).reverse();
  for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i])) throw invalid(`${what}: value ${i} is ${out[i]}; tensor data must be finite numbers`);
  return out;
}

/** A Float32Array as little-endian bytes. */
export function floatsToLE(data: Float32Array): Buffer {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN_HOST) return bytes;
  const copy = Buffer.from(bytes);
  for (let i = 0; i < copy.length; i += 4) copy.subarray(i, i + 4).reverse();
  return copy;
}

/** A response body with the extension: the JSON header, then each binary tensor's bytes in order. */
export function encodeInferBody(header: object, binaries: Buffer[]): { body: Buffer; headerLength: number } {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  return { body: Buffer.concat([json, ...binaries]), headerLength: json.length };
}
