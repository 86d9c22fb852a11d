// A small writer of Lua Torch's binary .t7 format (torch7 File.lua writeObject), for tests that need files the
// fixtures do not cover: every element type, shared storages and views, cycles, and hand-broken headers.

export type LuaValue = null | number | string | boolean | LuaTable | LuaObject | LuaStorage | LuaTensor;

export class LuaTable {
  constructor(readonly entries: [LuaValue, LuaValue][] = []) {}
  set(k: LuaValue, v: LuaValue): this {
    this.entries.push([k, v]);
    return this;
  }
}

export class LuaObject {
  constructor(
    readonly className: string,
    readonly fields: LuaTable = new LuaTable(),
    readonly version = 1,
  ) {}
}

/** `type` is the class prefix: Byte, Char, Short, Int, Long, Float, Double, Half, Cuda, CudaDouble... */
export class LuaStorage {
  constructor(
    readonly type: string,
    readonly values: readonly number[],
  ) {}
}

export class LuaTensor {
  constructor(
    readonly type: string,
    readonly storage: LuaStorage | null,
    readonly sizes: readonly number[],
    readonly strides: readonly number[],
    /** 0-based; written 1-based as Lua does. */
    readonly offset = 0,
  ) {}
}

export function contiguous(type: string, sizes: number[], values: number[]): LuaTensor {
  const strides = sizes.map((_, i) => sizes.slice(i + 1).reduce((p, d) => p * d, 1));
  return new LuaTensor(type, new LuaStorage(type, values), sizes, strides, 0);
}

const ELEM: Record<string, [number, (v: DataView, o: number, x: number, long: number) => void]> = {
  Byte: [1, (v, o, x) => v.setUint8(o, x)],
  Char: [1, (v, o, x) => v.setInt8(o, x)],
  Short: [2, (v, o, x) => v.setInt16(o, x, true)],
  Int: [4, (v, o, x) => v.setInt32(o, x, true)],
  Long: [8, (v, o, x, l) => (l === 8 ? v.setBigInt64(o, BigInt(x), true) : v.setInt32(o, x, true))],
  Float: [4, (v, o, x) => v.setFloat32(o, x, true)],
  Double: [8, (v, o, x) => v.setFloat64(o, x, true)],
  Half: [2, (v, o, x) => v.setUint16(o, floatToHalf(x), true)],
};

function elem(type: string): [number, (v: DataView, o: number, x: number, long: number) => void] {
  const base = type === 'Cuda' ? 'Float' : type.replace(/^Cuda/, '');
  const e = ELEM[base];
  if (!e) throw new Error(`unknown storage type ${type}`);
  return e;
}

function floatToHalf(x: number): number {
  // Exact for the small integers and halves the tests use.
  if (x === 0) return 0;
  const s = x < 0 ? 0x8000 : 0;
  let a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  a = a / 2 ** e - 1;
  e += 15;
  return s | (e << 10) | Math.round(a * 1024);
}

export class T7Writer {
  private readonly chunks: Uint8Array[] = [];
  private readonly memo = new Map<object, number>();

  constructor(readonly longSize: 4 | 8 = 8) {}

  private put(n: number, f: (v: DataView) => void): this {
    const b = new Uint8Array(n);
    f(new DataView(b.buffer));
    this.chunks.push(b);
    return this;
  }
  int(x: number): this {
    return this.put(4, (v) => v.setInt32(0, x, true));
  }
  long(x: number): this {
    return this.longSize === 8 ? this.put(8, (v) => v.setBigInt64(0, BigInt(x), true)) : this.int(x);
  }
  double(x: number): this {
    return this.put(8, (v) => v.setFloat64(0, x, true));
  }
  raw(bytes: Uint8Array): this {
    this.chunks.push(bytes);
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, 'latin1');
    return this.int(b.length).raw(b);
  }

  /** Writes the index; true when the object was written before (then only the reference is written). */
  private ref(o: object): boolean {
    const seen = this.memo.get(o);
    if (seen !== undefined) {
      this.int(seen);
      return true;
    }
    const i = this.memo.size + 1;
    this.memo.set(o, i);
    this.int(i);
    return false;
  }

  value(x: LuaValue): this {
    if (x === null) return this.int(0);
    if (typeof x === 'boolean') return this.int(5).int(x ? 1 : 0);
    if (typeof x === 'number') return this.int(1).double(x);
    if (typeof x === 'string') return this.int(2).str(x);
    if (x instanceof LuaTable) {
      this.int(3);
      if (this.ref(x)) return this;
      this.int(x.entries.length);
      for (const [k, v] of x.entries) this.value(k).value(v);
      return this;
    }
    this.int(4);
    if (this.ref(x)) return this;
    if (x instanceof LuaObject) return this.str(`V ${x.version}`).str(x.className).value(x.fields);
    if (x instanceof LuaStorage) {
      const [size, set] = elem(x.type);
      const es = x.type.endsWith('Long') ? this.longSize : size;
      this.str('V 1').str(`torch.${x.type}Storage`).long(x.values.length);
      return this.put(es * x.values.length, (v) => x.values.forEach((val, i) => set(v, i * es, val, this.longSize)));
    }
    this.str('V 1').str(`torch.${x.type}Tensor`).int(x.sizes.length);
    x.sizes.forEach((s) => this.long(s));
    x.strides.forEach((s) => this.long(s));
    return this.long(x.offset + 1).value(x.storage);
  }

  bytes(): Uint8Array {
    return Buffer.concat(this.chunks);
  }
}

export function t7(x: LuaValue, longSize: 4 | 8 = 8): Uint8Array {
  return new T7Writer(longSize).value(x).bytes();
}
