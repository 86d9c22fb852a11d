// A reader for Lua Torch 7's binary serialisation (torch.save / torch.load, `.t7`), written from torch7's
// File.lua and generic/Tensor.c, generic/Storage.c. Safe on hostile input: every declared size is checked
// against the bytes left before anything is allocated, nesting is handled with an explicit stack (no
// recursion), back-references and cycles resolve to the same object as in Lua, and code (serialised Lua
// functions) is refused, never run. Storage data is not copied: storages are views into the file's bytes.

import { readFileSync } from 'node:fs';
import { halfToFloat } from '../export/safetensors.js';
import { count, isAre, withArticle } from './text.js';

/** Any value a .t7 file can hold. Tables and torch objects keep identity, so cycles are representable. */
export type T7Value = null | number | string | boolean | T7Table | T7Object | T7Tensor | T7Storage;
export type T7Key = number | string | boolean | T7Table | T7Object | T7Tensor | T7Storage;

export class T7Error extends Error {
  override name = 'T7Error';
}

/** A Lua table. Keys compare as Lua's do (numbers by value, strings by content, tables by identity). */
export class T7Table {
  readonly entries = new Map<T7Key, T7Value>();
  get(key: T7Key): T7Value | undefined {
    return this.entries.get(key);
  }
  /** The array part: values at keys 1, 2, ... up to the first missing one. */
  array(): T7Value[] {
    const out: T7Value[] = [];
    for (let i = 1; this.entries.has(i); i++) out.push(this.entries.get(i)!);
    return out;
  }
  get size(): number {
    return this.entries.size;
  }
}

/** An instance of a torch class (`nn.Sequential`, `tds.Hash`, ...) with its fields. */
export class T7Object {
  readonly fields = new T7Table();
  constructor(
    readonly className: string,
    /** From the file's "V n" tag; 0 for files written before torch versioned classes. */
    readonly version: number,
  ) {}
  get(key: string): T7Value | undefined {
    return this.fields.get(key);
  }
}

/** Element types of torch storages and tensors; `long` is 8 bytes on Linux and macOS, 4 on Windows. */
export type T7ElementType = 'uint8' | 'int8' | 'int16' | 'int32' | 'int64' | 'float32' | 'float64' | 'float16';

const ELEMENT_OF: Readonly<Record<string, T7ElementType>> = {
  Byte: 'uint8',
  Char: 'int8',
  Short: 'int16',
  Int: 'int32',
  Long: 'int64',
  Float: 'float32',
  Double: 'float64',
  Half: 'float16',
  // cutorch writes a GPU storage as the CPU storage of the same element type; torch.CudaTensor is float.
  Cuda: 'float32',
  CudaByte: 'uint8',
  CudaChar: 'int8',
  CudaShort: 'int16',
  CudaInt: 'int32',
  CudaLong: 'int64',
  CudaDouble: 'float64',
  CudaHalf: 'float16',
};

const CLASS_RE = /^torch\.([A-Za-z]*)(Tensor|Storage)$/;

function elementSize(t: T7ElementType, longSize: number): number {
  switch (t) {
    case 'uint8':
    case 'int8':
      return 1;
    case 'int16':
    case 'float16':
      return 2;
    case 'int32':
    case 'float32':
      return 4;
    case 'float64':
      return 8;
    case 'int64':
      return longSize;
  }
}

/** A torch storage: a flat array of elements, here a view into the file's bytes. */
export class T7Storage {
  constructor(
    readonly className: string,
    readonly elementType: T7ElementType,
    /** Number of elements. */
    readonly length: number,
    readonly bytes: Uint8Array,
    readonly elementSize: number,
  ) {}

  /** Element i as a JS number (int64 beyond 2^53 loses precision, as any float conversion would). */
  at(i: number, view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength)): number {
    const o = i * this.elementSize;
    switch (this.elementType) {
      case 'uint8':
        return view.getUint8(o);
      case 'int8':
        return view.getInt8(o);
      case 'int16':
        return view.getInt16(o, true);
      case 'int32':
        return view.getInt32(o, true);
      case 'int64':
        return this.elementSize === 4 ? view.getInt32(o, true) : Number(view.getBigInt64(o, true));
      case 'float32':
        return view.getFloat32(o, true);
      case 'float64':
        return view.getFloat64(o, true);
      case 'float16':
        return halfToFloat(view.getUint16(o, true));
    }
  }
}

/** A torch tensor: sizes, strides and a 0-based offset into a (possibly shared) storage. */
export class T7Tensor {
  storage: T7Storage | null = null;
  constructor(
    readonly className: string,
    readonly elementType: T7ElementType,
    readonly sizes: readonly number[],
    readonly strides: readonly number[],
    /** 0-based (the file stores Lua's 1-based offset). */
    readonly offset: number,
  ) {}

  get numel(): number {
    return this.sizes.length === 0 ? 0 : this.sizes.reduce((p, d) => p * d, 1);
  }

  isContiguous(): boolean {
    let expected = 1;
    for (let i = this.sizes.length - 1; i >= 0; i--) {
      if (this.sizes[i] !== 1 && this.strides[i] !== expected) return false;
      expected *= this.sizes[i];
    }
    return true;
  }

  /** The elements in row-major order as float32, following sizes and strides. Bounds were checked on load. */
  toFloat32(): Float32Array {
    const n = this.numel;
    const out = new Float32Array(n);
    if (n === 0) return out;
    const s = this.storage!;
    if (s.elementType === 'float32' && this.isContiguous()) {
      // Copy the byte range (the file offset need not be 4-byte aligned).
      new Uint8Array(out.buffer).set(s.bytes.subarray(this.offset * 4, (this.offset + n) * 4));
      return out;
    }
    const view = new DataView(s.bytes.buffer, s.bytes.byteOffset, s.bytes.byteLength);
    const nd = this.sizes.length;
    const idx = new Array<number>(nd).fill(0);
    let pos = this.offset;
    for (let k = 0; k < n; k++) {
      out[k] = s.at(pos, view);
      for (let d = nd - 1; d >= 0; d--) {
        idx[d]++;
        pos += this.strides[d];
        if (idx[d] < this.sizes[d]) break;
        pos -= this.strides[d] * this.sizes[d];
        idx[d] = 0;
      }
    }
    return out;
  }
}

// torch7 File.lua's type tags.
const TYPE_NIL = 0;
const TYPE_NUMBER = 1;
const TYPE_STRING = 2;
const TYPE_TABLE = 3;
const TYPE_TORCH = 4;
const TYPE_BOOLEAN = 5;
const TYPE_FUNCTION = 6;
const LEGACY_TYPE_RECUR_FUNCTION = 7;
const TYPE_RECUR_FUNCTION = 8;

/** Tensors in torch have at most a handful of dimensions; this only bounds hostile headers. */
const MAX_DIMS = 64;

export interface T7ReadOptions {
  /** Bytes of a C `long` in the writer's ABI: 8 (Linux, macOS) or 4 (Windows). Default 8. */
  longSize?: 4 | 8;
  /** Upper bound on tables, objects, tensors and storages in one file (default 10 million). */
  maxObjects?: number;
  /** Name used in error messages (default "the file"). */
  name?: string;
}

// What the reader is filling while it reads the values nested in it. `step` is how the frame's value is reached
// from its parent (`[3]`, `.weight (torch.FloatTensor)`); the path in messages is built from them on error only.
type Frame =
  | { kind: 'root'; step: string; value?: T7Value; done: boolean }
  | { kind: 'table'; step: string; table: T7Table; left: number; key: T7Key | undefined }
  | { kind: 'fields'; step: string; object: T7Object; done: boolean }
  | { kind: 'tensor'; step: string; tensor: T7Tensor; done: boolean }
  | { kind: 'tds.Hash'; step: string; object: T7Object; left: number; key: T7Key | undefined }
  | { kind: 'tds.Vec'; step: string; object: T7Object; left: number; next: number };

const PENDING = Symbol('pending');

class Reader {
  private pos = 0;
  private readonly view: DataView;
  private readonly objects = new Map<number, T7Value>();
  private readonly stack: Frame[] = [];
  private readonly longSize: 4 | 8;
  private readonly maxObjects: number;
  private readonly name: string;

  constructor(private readonly buf: Uint8Array, o: T7ReadOptions) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.longSize = o.longSize ?? 8;
    this.maxObjects = o.maxObjects ?? 10_000_000;
    this.name = o.name ?? 'the file';
  }

  /** Where the reader is, as a Lua-like access path (`root.modules[5].weight`), bounded in length. */
  private where(): string {
    const steps = this.stack.map((f) => f.step);
    const top = this.stack[this.stack.length - 1];
    if (top && top.kind !== 'root') steps.push(this.childStep());
    const path = steps.join('');
    return path.length > 240 ? `${path.slice(0, 60)}...${path.slice(-160)}` : path;
  }

  fail(message: string): never {
    throw new T7Error(`${this.name}: ${message} (at byte ${this.pos}, in ${this.where()})`);
  }

  private need(n: number, what: string): void {
    const left = this.buf.length - this.pos;
    if (n > left) this.fail(`${what} needs ${count(n, 'byte')}, but ${left === 0 ? 'the file ends there' : `only ${count(left, 'byte')} ${isAre(left)} left`} (truncated or corrupted file)`);
  }

  private int(what: string): number {
    this.need(4, what);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  private long(what: string): number {
    this.need(this.longSize, what);
    if (this.longSize === 4) {
      const v = this.view.getInt32(this.pos, true);
      this.pos += 4;
      return v;
    }
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is ${v}, beyond any real size`);
    return Number(v);
  }

  private double(what: string): number {
    this.need(8, what);
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  private string(what: string): string {
    const len = this.int(`length of ${what}`);
    if (len < 0) this.fail(`${what} has negative length ${len}`);
    this.need(len, what);
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, len).toString('latin1');
    this.pos += len;
    return s;
  }

  private register(index: number, v: T7Value): void {
    if (this.objects.size >= this.maxObjects) this.fail(`more than ${this.maxObjects} objects`);
    this.objects.set(index, v);
  }

  /** How the next value read into the frame on top of the stack is reached from it. */
  private childStep(): string {
    const f = this.stack[this.stack.length - 1];
    const keyText = (k: T7Key): string => (typeof k === 'number' ? `[${k}]` : typeof k === 'string' ? (/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`) : '[<key>]');
    switch (f.kind) {
      case 'root':
      case 'fields':
        return '';
      case 'table':
      case 'tds.Hash':
        return f.key === undefined ? '<key>' : keyText(f.key);
      case 'tensor':
        return '<storage>';
      case 'tds.Vec':
        return `[${f.next}]`;
    }
  }

  /** Reads one value. A new compound value gets a frame on the stack and PENDING is returned. */
  private value(): T7Value | typeof PENDING {
    const tag = this.int('type tag');
    switch (tag) {
      case TYPE_NIL:
        return null;
      case TYPE_NUMBER:
        return this.double('number');
      case TYPE_BOOLEAN:
        return this.int('boolean') === 1;
      case TYPE_STRING:
        return this.string('string');
      case TYPE_FUNCTION:
      case LEGACY_TYPE_RECUR_FUNCTION:
      case TYPE_RECUR_FUNCTION:
        return this.fail('a serialised Lua function: functions are code, and resnet-onnx does not load or run them');
      case TYPE_TABLE:
      case TYPE_TORCH: {
        const index = this.int('object index');
        const seen = this.objects.get(index);
        if (seen !== undefined) return seen; // a back-reference (Lua returns the object whatever the tag says)
        const step = this.childStep();
        if (tag === TYPE_TABLE) {
          const size = this.int('table size');
          // Each entry is at least two 4-byte type tags.
          if (size < 0 || size > (this.buf.length - this.pos) / 8) this.fail(`table declares ${count(size, 'entry', 'entries')}, more than the ${count(this.buf.length - this.pos, 'byte')} left can hold`);
          const table = new T7Table();
          this.register(index, table);
          if (size === 0) return table;
          this.stack.push({ kind: 'table', step, table, left: size, key: undefined });
          return PENDING;
        }
        return this.torchObject(index, step);
      }
      default:
        return this.fail(`unknown type tag ${tag} (not a binary Lua Torch file, or a corrupted one)`);
    }
  }

  private torchObject(index: number, step: string): T7Value | typeof PENDING {
    const versionText = this.string('class version');
    const m = /^V (.*)$/.exec(versionText);
    let className = versionText;
    let version = 0;
    if (m) {
      version = Number(m[1]);
      if (!Number.isFinite(version)) this.fail(`class version '${versionText}' is not a number`);
      className = this.string('class name');
    }
    const at = `${step} (${className})`;
    const typed = CLASS_RE.exec(className);
    if (typed) {
      const elementType = ELEMENT_OF[typed[1]];
      if (!elementType) this.fail(`unknown tensor type ${className}`);
      return typed[2] === 'Storage' ? this.storage(index, className, elementType) : this.tensor(index, className, elementType, at);
    }
    const object = new T7Object(className, version);
    this.register(index, object);
    if (className === 'tds.Hash' || className === 'tds.Vec') {
      // tds writes its size as a C long, then the entries (keys and values, or elements).
      const entries = this.long(`${className} size`);
      const per = className === 'tds.Hash' ? 8 : 4;
      if (entries < 0 || entries > (this.buf.length - this.pos) / per)
        this.fail(`${className} declares ${count(entries, 'entry', 'entries')}, more than the ${count(this.buf.length - this.pos, 'byte')} left can hold`);
      if (entries === 0) return object;
      if (className === 'tds.Hash') this.stack.push({ kind: 'tds.Hash', step: at, object, left: entries, key: undefined });
      else this.stack.push({ kind: 'tds.Vec', step: at, object, left: entries, next: 1 });
      return PENDING;
    }
    this.stack.push({ kind: 'fields', step: at, object, done: false });
    return PENDING;
  }

  private storage(index: number, className: string, elementType: T7ElementType): T7Storage {
    const length = this.long(`${className} size`);
    const es = elementSize(elementType, this.longSize);
    if (length < 0) this.fail(`${className} has negative size ${length}`);
    if (length > (this.buf.length - this.pos) / es)
      this.fail(`${className} declares ${count(length, 'element')} (${count(length * es, 'byte')}), but only ${count(this.buf.length - this.pos, 'byte')} ${isAre(this.buf.length - this.pos)} left (truncated file?)`);
    const bytes = this.buf.subarray(this.pos, this.pos + length * es);
    this.pos += length * es;
    const s = new T7Storage(className, elementType, length, bytes, es);
    this.register(index, s);
    return s;
  }

  private tensor(index: number, className: string, elementType: T7ElementType, at: string): typeof PENDING {
    const nd = this.int(`${className} dimension count`);
    if (nd < 0 || nd > MAX_DIMS) this.fail(`${className} has ${count(nd, 'dimension')} (0 to ${MAX_DIMS} allowed)`);
    this.need((2 * nd + 1) * this.longSize, `${className} header`);
    const sizes: number[] = [];
    const strides: number[] = [];
    for (let i = 0; i < nd; i++) sizes.push(this.long(`${className} size`));
    for (let i = 0; i < nd; i++) strides.push(this.long(`${className} stride`));
    const offset = this.long(`${className} storage offset`) - 1;
    if (sizes.some((s) => s < 0)) this.fail(`${className} has a negative size [${sizes.join(', ')}]`);
    if (strides.some((s) => s < 0)) this.fail(`${className} has a negative stride [${strides.join(', ')}]`);
    if (offset < 0) this.fail(`${className} has storage offset ${offset + 1}; Lua offsets start at 1`);
    const t = new T7Tensor(className, elementType, sizes, strides, offset);
    this.register(index, t);
    this.stack.push({ kind: 'tensor', step: at, tensor: t, done: false });
    return PENDING;
  }

  /** Gives a finished value to the frame on top of the stack. */
  private accept(v: T7Value): void {
    const f = this.stack[this.stack.length - 1];
    switch (f.kind) {
      case 'root':
        f.value = v;
        f.done = true;
        return;
      case 'table':
      case 'tds.Hash': {
        const table = f.kind === 'table' ? f.table : f.object.fields;
        if (f.key === undefined) {
          if (v === null) this.fail('a table key is nil');
          if (typeof v === 'number' && Number.isNaN(v)) this.fail('a table key is NaN');
          f.key = v;
        } else {
          table.entries.set(f.key, v);
          f.key = undefined;
          f.left--;
        }
        return;
      }
      case 'tds.Vec':
        f.object.fields.entries.set(f.next++, v);
        f.left--;
        return;
      case 'fields':
        if (!(v instanceof T7Table)) this.fail(`the fields of ${f.object.className} must be a table, got ${describeValue(v)}`);
        for (const [k, x] of v.entries) f.object.fields.entries.set(k, x);
        f.done = true;
        return;
      case 'tensor': {
        const t = f.tensor;
        if (v !== null) {
          if (!(v instanceof T7Storage)) this.fail(`the storage of ${t.className} is ${describeValue(v)}, not a storage`);
          if (v.elementType !== t.elementType) this.fail(`${t.className} points into ${withArticle(v.className)}`);
          t.storage = v;
        }
        checkBounds(t, (m) => this.fail(m));
        f.done = true;
        return;
      }
    }
  }

  private complete(f: Frame): boolean {
    switch (f.kind) {
      case 'root':
      case 'fields':
      case 'tensor':
        return f.done;
      case 'table':
      case 'tds.Hash':
        return f.left === 0 && f.key === undefined;
      case 'tds.Vec':
        return f.left === 0;
    }
  }

  private result(f: Frame): T7Value {
    switch (f.kind) {
      case 'root':
        return f.value ?? null;
      case 'table':
        return f.table;
      case 'fields':
      case 'tds.Hash':
      case 'tds.Vec':
        return f.object;
      case 'tensor':
        return f.tensor;
    }
  }

  read(): T7Value {
    this.stack.push({ kind: 'root', step: 'root', done: false });
    for (;;) {
      const top = this.stack[this.stack.length - 1];
      if (this.complete(top)) {
        this.stack.pop();
        const v = this.result(top);
        if (this.stack.length === 0) {
          if (this.pos !== this.buf.length) this.fail(`${count(this.buf.length - this.pos, 'byte')} left after the stored object`);
          return v;
        }
        this.accept(v);
        continue;
      }
      const v = this.value();
      if (v !== PENDING) this.accept(v);
    }
  }
}

/** Checks that every element a tensor addresses lies inside its storage. */
function checkBounds(t: T7Tensor, fail: (m: string) => never): void {
  if (t.sizes.length !== t.strides.length) fail(`${t.className} has ${count(t.sizes.length, 'size')} and ${count(t.strides.length, 'stride')}`);
  const shape = `[${t.sizes.join(', ')}] (strides [${t.strides.join(', ')}], offset ${t.offset})`;
  let numel = t.sizes.length === 0 ? 0 : 1;
  let last = t.offset;
  for (let i = 0; i < t.sizes.length; i++) {
    numel *= t.sizes[i];
    if (t.sizes[i] > 0) last += (t.sizes[i] - 1) * t.strides[i];
    if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) fail(`${t.className} ${shape} is too large`);
  }
  if (numel === 0) return;
  if (!t.storage) fail(`${t.className} ${shape} has elements but no storage`);
  if (last >= t.storage.length) fail(`${t.className} ${shape} reaches element ${last + 1} of a ${t.storage.length}-element storage`);
  // A view may repeat elements (stride 0) but never be larger than its storage: materialising it is bounded.
  if (numel > t.storage.length) fail(`${t.className} ${shape} has more elements than its ${t.storage.length}-element storage`);
}

export function describeValue(v: T7Value | undefined): string {
  if (v === undefined || v === null) return 'nil';
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'boolean') return `the boolean ${v}`;
  if (v instanceof T7Table) return v.size === 0 ? 'an empty table' : `a table with ${count(v.size, 'entry', 'entries')}`;
  if (v instanceof T7Tensor) return `${withArticle(v.className)} [${v.sizes.join(', ')}]`;
  if (v instanceof T7Storage) return `${withArticle(v.className)} of ${count(v.length, 'element')}`;
  return withArticle(v.className);
}

/** True when the bytes look like Lua Torch's ASCII serialisation (torch.save(f, x, 'ascii')). */
function looksAscii(buf: Uint8Array): boolean {
  const head = Buffer.from(buf.subarray(0, 16)).toString('latin1');
  return /^\d{1,2}\n\d+\n/.test(head);
}

/**
 * Reads a binary .t7 file's bytes into JS values. Files written by Lua Torch on Windows (4-byte longs) are
 * recognised and refused with a clear error rather than misread: when a file does not parse with 8-byte
 * longs but parses completely with 4-byte ones, it is a Windows file.
 */
export function readT7(buf: Uint8Array, o: T7ReadOptions = {}): T7Value {
  const name = o.name ?? 'the file';
  if (looksAscii(buf)) throw new T7Error(`${name}: a Lua Torch ASCII file; only the binary format (torch.save's default) is read. Re-save it in binary.`);
  if (o.longSize) return new Reader(buf, o).read();
  try {
    return new Reader(buf, { ...o, longSize: 8 }).read();
  } catch (e) {
    if (!(e instanceof T7Error)) throw e;
    let windows = false;
    try {
      new Reader(buf, { ...o, longSize: 4 }).read();
      windows = true;
    } catch {
      // not a 4-byte-long file either: report the original error
    }
    if (windows)
      throw new T7Error(
        `${name}: written by Lua Torch on Windows, whose C 'long' is 4 bytes (it parses only with 4-byte sizes); ` +
          'such files are not supported. Re-save it on Linux or macOS, or convert the tensors to safetensors.',
      );
    throw e;
  }
}

export function readT7File(path: string, o: T7ReadOptions = {}): T7Value {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new T7Error(`${path}: cannot be read (${(e as Error).message.replace(/, open '.*'$/, '')})`);
  }
  return readT7(buf, { name: path, ...o });
}

/** Whether the first bytes could start a binary .t7 file (a known type tag, little-endian). */
export function looksLikeT7(head: Uint8Array): boolean {
  if (looksAscii(head)) return true;
  if (head.length < 8) return false;
  const tag = new DataView(head.buffer, head.byteOffset, head.byteLength).getInt32(0, true);
  return tag >= TYPE_NIL && tag <= TYPE_RECUR_FUNCTION;
}
