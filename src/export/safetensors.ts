// Checkpoints in the safetensors format: an 8-byte header length, a JSON header naming each tensor's dtype,
// shape and byte range, then raw little-endian data. Loading it runs no code, and PyTorch users can read it.
// The reader checks every declared size against the file before allocating anything.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { writeFileAtomic, writeFileAtomicAsync, yieldToEventLoop } from './atomic.js';

export type SafeDType = 'F32' | 'F64' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
const ELEM_SIZE: Record<SafeDType, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const MAX_HEADER = 100 * 1024 * 1024;

export interface SafeTensorEntry {
  readonly name: string;
  readonly dtype: SafeDType;
  readonly shape: readonly number[];
  /** Byte offset of the tensor's data in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** An open safetensors file; tensors are read one at a time on demand. */
export class SafeTensorsFile {
  readonly tensors: ReadonlyMap<string, SafeTensorEntry>;
  readonly metadata: Readonly<Record<string, string>>;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    tensors: Map<string, SafeTensorEntry>,
    metadata: Record<string, string>,
  ) {
    this.tensors = tensors;
    this.metadata = metadata;
  }

  static open(path: string): SafeTensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new CheckpointError(`cannot open checkpoint ${path}: ${(e as Error).message}`);
    }
    try {
      const size = fstatSync(fd).size;
      const bad = (why: string): never => {
        throw new CheckpointError(`${path} is not a valid safetensors checkpoint: ${why}`);
      };
      if (size < 8) bad(`file is ${size} bytes, shorter than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen > size - 8) bad(`declared header length ${headerLen} exceeds the file's ${size - 8} bytes after the length field (truncated or corrupted file)`);
      if (headerLen > MAX_HEADER) bad(`declared header length ${headerLen} exceeds the ${MAX_HEADER}-byte limit on headers`);
      const headerBuf = Buffer.alloc(headerLen);
      readSync(fd, headerBuf, 0, headerLen, 8);
      let header: unknown;
      try {
        header = JSON.parse(headerBuf.toString('utf8'));
      } catch (e) {
        return bad(`header is not JSON (${(e as Error).message})`);
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) return bad('header is not a JSON object');
      const dataStart = 8 + headerLen;
      const dataLen = size - dataStart;
      const tensors = new Map<string, SafeTensorEntry>();
      let metadata: Record<string, string> = {};
      const ranges: [number, number, string][] = [];
      for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
        if (name === '__metadata__') {
          if (typeof raw !== 'object' || raw === null || Object.values(raw).some((v) => typeof v !== 'string'))
            bad('__metadata__ must map strings to strings');
          metadata = raw as Record<string, string>;
          continue;
        }
        const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (typeof e !== 'object' || e === null) bad(`entry '${name}' is not an object`);
        if (typeof e.dtype !== 'string' || !(e.dtype in ELEM_SIZE)) bad(`tensor '${name}' has unknown dtype ${JSON.stringify(e.dtype)}`);
        if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(`tensor '${name}' has an invalid shape`);
        const offs = e.data_offsets;
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1])
          bad(`tensor '${name}' has invalid data_offsets`);
        const [begin, end] = offs as [number, number];
        if (end > dataLen) bad(`tensor '${name}' ends at byte ${end} of the data, which is only ${dataLen} bytes (truncated file?)`);
        const dtype = e.dtype as SafeDType;
        const shape = e.shape as number[];
        const expected = shape.reduce((p, d) => p * d, 1) * ELEM_SIZE[dtype];
        if (end - begin !== expected) bad(`tensor '${name}' of shape [${shape.join(', ')}] ${dtype} needs ${expected} bytes, its range holds ${end - begin}`);
        ranges.push([begin, end, name]);
        tensors.set(name, { name, dtype, shape, offset: dataStart + begin, byteLength: end - begin });
      }
      ranges.sort((a, b) => a[0] - b[0]);
      for (let i = 1; i < ranges.length; i++) if (ranges[i][0] < ranges[i - 1][1]) bad(`tensors '${ranges[i - 1][2]}' and '${ranges[i][2]}' overlap`);
      return new SafeTensorsFile(path, fd, tensors, metadata);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Reads one tensor as float32 (F32 as stored; F64/F16/BF16 converted). */
  readFloat32(name: string): Float32Array {
    const e = this.tensors.get(name);
    if (!e) throw new CheckpointError(`${this.path} has no tensor '${name}'`);
    const buf = Buffer.alloc(e.byteLength);
    let got = 0;
    while (got < e.byteLength) {
      const n = readSync(this.fd, buf, got, e.byteLength - got, e.offset + got);
      if (n === 0) throw new CheckpointError(`${this.path}: unexpected end of file in tensor '${name}'`);
      got += n;
    }
    return toFloat32(buf, e.dtype, `${this.path}: tensor '${name}'`);
  }

  close(): void {
    closeSync(this.fd);
  }
}

function toFloat32(buf: Buffer, dtype: SafeDType, where: string): Float32Array {
  const n = buf.length / ELEM_SIZE[dtype];
  const out = new Float32Array(n);
  switch (dtype) {
    case 'F32':
      new Uint8Array(out.buffer).set(buf);
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = buf.readDoubleLE(8 * i);
      return out;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = buf.readUInt16LE(2 * i) << 16;
      return out;
    }
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = halfToFloat(buf.readUInt16LE(2 * i));
      return out;
    default:
      throw new CheckpointError(`${where} is ${dtype}; a floating-point tensor is needed`);
  }
}

/** IEEE 754 half precision (binary16) to a JS number. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

export interface TensorToSave {
  readonly name: string;
  readonly shape: readonly number[];
  /** Produced when written, so a large checkpoint is streamed. */
  readonly values: () => Float32Array;
}

/** The file's bytes: the header, then one piece per tensor, produced when asked for (a large checkpoint is streamed). */
function* safeTensorsPieces(tensors: readonly TensorToSave[], metadata: Readonly<Record<string, string>>): Generator<Uint8Array> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((p, d) => p * d, 1) * 4;
    header[t.name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // data starts 8-byte aligned
  const jsonBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(jsonBuf.length));
  yield Buffer.concat([lenBuf, jsonBuf]);
  for (const t of tensors) {
    const v = t.values();
    const expected = t.shape.reduce((p, d) => p * d, 1);
    if (v.length !== expected) throw new CheckpointError(`tensor '${t.name}' has ${v.length} values, shape [${t.shape.join(', ')}] needs ${expected}`);
    yield new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }
}

/** Writes float32 tensors (in the given order) and string metadata atomically. */
export function writeSafeTensors(path: string, tensors: readonly TensorToSave[], metadata: Readonly<Record<string, string>> = {}): void {
  writeFileAtomic(path, (put) => {
    for (const piece of safeTensorsPieces(tensors, metadata)) put(piece);
  });
}

/** As writeSafeTensors, yielding to the event loop after each tensor, so that an interrupt stops it promptly. */
export async function writeSafeTensorsAsync(path: string, tensors: readonly TensorToSave[], metadata: Readonly<Record<string, string>> = {}): Promise<void> {
  await writeFileAtomicAsync(path, async (put) => {
    for (const piece of safeTensorsPieces(tensors, metadata)) {
      put(piece);
      await yieldToEventLoop();
    }
  });
}
