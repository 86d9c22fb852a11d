// The .t7 reader: real Lua Torch files (../shared/fixtures/t7) read to the contents their README lists, every
// element type, shared storages and views, back-references and cycles, and hostile or broken input (Windows
// longs, huge declared sizes, deep nesting, truncations, byte flips) failing cleanly and quickly.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { T7Error, T7Object, T7Storage, T7Table, T7Tensor, type T7Value, readT7, readT7File } from '../src/import/t7.js';
import { LuaObject, LuaStorage, LuaTable, LuaTensor, T7Writer, contiguous, t7 } from './t7-writer.js';
import { T7_FIXTURES } from './helpers.js';
import { rng } from '../src/graph/init.js';

const FIXTURES = T7_FIXTURES;
const fixture = (name: string): T7Value => readT7File(join(FIXTURES, name));

function table(v: T7Value): T7Table {
  expect(v, `expected a table, got ${String(v)}`).toBeInstanceOf(T7Table);
  return v as T7Table;
}

describe('real Lua Torch files (python-torchfile test data) read to their known contents', () => {
  it('hello=123.t7: {hello = 123}', () => {
    const t = table(fixture('hello=123.t7'));
    expect([...t.entries]).toEqual([['hello', 123]]);
  });

  it('doubletensor.t7: DoubleTensor [[1, 2, 3], [4, 5, 6.9]]', () => {
    const t = fixture('doubletensor.t7') as T7Tensor;
    expect(t).toBeInstanceOf(T7Tensor);
    expect(t.className).toBe('torch.DoubleTensor');
    expect(t.sizes).toEqual([2, 3]);
    expect(Array.from({ length: 6 }, (_, i) => t.storage!.at(t.offset + i))).toEqual([1, 2, 3, 4, 5, 6.9]);
    expect(Array.from(t.toFloat32())).toEqual([1, 2, 3, 4, 5, Math.fround(6.9)]);
  });

  it('floattensor.t7: a FloatTensor whose elements sum to 12.97241666913', () => {
    const t = fixture('floattensor.t7') as T7Tensor;
    expect(t.className).toBe('torch.FloatTensor');
    const sum = t.toFloat32().reduce((s, v) => s + v, 0);
    expect(Math.abs(sum - 12.97241666913)).toBeLessThan(1e-5);
  });

  it('list_table.t7: keys 1..4 = hello, world, third item, 123', () => {
    expect(table(fixture('list_table.t7')).array()).toEqual(['hello', 'world', 'third item', 123]);
  });

  it('map_table1.t7 and map_table2.t7: maps, including a string key', () => {
    expect([...table(fixture('map_table1.t7')).entries]).toEqual([[0, 'zero'], [1, 'hello'], [2, 'world'], [3, 'third item'], [4, 123]]);
    const t2 = table(fixture('map_table2.t7'));
    expect(t2.get('a')).toBe('non number key');
    expect(t2.array()).toEqual(['hello', 'world', 'third item', 123]);
  });

  it("custom_class.t7: an object of the user class 'Blah'", () => {
    const o = fixture('custom_class.t7') as T7Object;
    expect(o).toBeInstanceOf(T7Object);
    expect(o.className).toBe('Blah');
    expect(o.version).toBe(1);
    expect(o.fields.size).toBe(0);
  });

  it("recursive_class.t7: object 'A' whose field a is itself", () => {
    const o = fixture('recursive_class.t7') as T7Object;
    expect(o.className).toBe('A');
    expect(o.get('a')).toBe(o);
  });

  it('recursive_kv_table.t7: a table whose only key and value are the table itself', () => {
    const t = table(fixture('recursive_kv_table.t7'));
    expect(t.size).toBe(1);
    const [[k, v]] = [...t.entries];
    expect(k).toBe(t);
    expect(v).toBe(t);
  });

  it('tds_hash.t7 and tds_vec.t7: tds.Hash {1 -> 2, 10 -> 11, 2 -> 3}, tds.Vec [123, 456]', () => {
    const h = fixture('tds_hash.t7') as T7Object;
    expect(h.className).toBe('tds.Hash');
    expect(Object.fromEntries([...h.fields.entries].map(([k, v]) => [String(k), v]))).toEqual({ 1: 2, 10: 11, 2: 3 });
    const v = fixture('tds_vec.t7') as T7Object;
    expect(v.className).toBe('tds.Vec');
    expect(v.fields.array()).toEqual([123, 456]);
  });

  it('gmodule_with_linear_identity.t7: an nngraph gModule with real nn.Linear and nn.Identity modules', () => {
    const g = fixture('gmodule_with_linear_identity.t7') as T7Object;
    expect(g.className).toBe('nn.gModule');
    expect(g.get('nInputs')).toBe(2);
    const modules = table(g.get('modules') as T7Value).array() as T7Object[];
    expect(modules.map((m) => m.className).sort()).toEqual(['nn.CAddTable', 'nn.Identity', 'nn.Identity', 'nn.Linear']);
    const linear = modules.find((m) => m.className === 'nn.Linear')!;
    const w = linear.get('weight') as T7Tensor;
    const b = linear.get('bias') as T7Tensor;
    expect([w.className, w.sizes, b.sizes]).toEqual(['torch.DoubleTensor', [2, 1], [2]]);
    expect(Array.from(w.toFloat32()).every(Number.isFinite)).toBe(true);
    expect((linear.get('gradWeight') as T7Tensor).sizes).toEqual([2, 1]);
    // The graph's nodes and the module list share objects: back-references keep them one object graph.
    const nodes = table(g.get('forwardnodes') as T7Value).array() as T7Object[];
    const nodeModules = nodes.map((n) => table(n.get('data') as T7Value).get('module')).filter((m) => m !== undefined);
    expect(new Set(nodeModules)).toEqual(new Set(modules));
    const fgNodes = table((g.get('fg') as T7Object).get('nodes') as T7Value).array();
    expect(nodes.every((n) => fgNodes.includes(n))).toBe(true);
  });

  it('nngraph_node.t7: an nngraph.Node', () => {
    const n = fixture('nngraph_node.t7') as T7Object;
    expect(n.className).toBe('nngraph.Node');
    expect(table(n.get('data') as T7Value).get('annotations')).toBeInstanceOf(T7Table);
  });

  it('function.t7 and function_upvals.t7: serialised Lua functions are refused, clearly', () => {
    for (const f of ['function.t7', 'function_upvals.t7']) expect(() => fixture(f)).toThrow(/serialised Lua function: functions are code.*not load or run them/);
  });
});

describe('element types, storages and views', () => {
  const types: [string, number[]][] = [
    ['Byte', [0, 1, 255]],
    ['Char', [-128, 0, 127]],
    ['Short', [-32768, 7, 32767]],
    ['Int', [-2147483648, 5, 2147483647]],
    ['Long', [-(2 ** 31), 3, 2 ** 31 - 1]],
    ['Float', [-1.5, 0.25, 2 ** 100]],
    ['Double', [-1e300, 0.1, Math.PI]],
    ['Half', [-2, 0.5, 1024]],
    ['Cuda', [1.5, -2.5, 4]],
    ['CudaDouble', [1e-300, 2, 3]],
    ['CudaLong', [1, -2, 3]],
  ];
  for (const [type, values] of types) {
    it(`torch.${type}Tensor and torch.${type}Storage`, () => {
      for (const long of [8, 4] as const) {
        const v = readT7(t7(contiguous(type, [3], values), long), { longSize: long }) as T7Tensor;
        expect(v.className).toBe(`torch.${type}Tensor`);
        expect(v.storage!.className).toBe(`torch.${type}Storage`);
        expect(Array.from({ length: 3 }, (_, i) => v.storage!.at(i))).toEqual(values);
        expect(Array.from(v.toFloat32())).toEqual(values.map(Math.fround));
      }
    });
  }

  it('8-byte longs beyond 32 bits', () => {
    const v = readT7(t7(new LuaStorage('Long', [-(2 ** 40), 2 ** 50]))) as T7Storage;
    expect([v.at(0), v.at(1)]).toEqual([-(2 ** 40), 2 ** 50]);
  });

  it('tensors sharing one storage keep sharing it; offsets and strides address it (transposed view)', () => {
    const s = new LuaStorage('Float', [0, 1, 2, 3, 4, 5, 6, 7]);
    const a = new LuaTensor('Float', s, [2, 3], [3, 1], 2); // rows [2,3,4], [5,6,7]
    const b = new LuaTensor('Float', s, [3, 2], [1, 3], 2); // its transpose
    const c = new LuaTensor('Float', s, [2], [0], 7); // a stride-0 view repeating element 7
    const root = readT7(t7(new LuaTable([[1, a], [2, b], [3, c], [4, a]]))) as T7Table;
    const [ra, rb, rc, ra2] = root.array() as T7Tensor[];
    expect(ra.storage).toBe(rb.storage);
    expect(ra2).toBe(ra);
    expect(Array.from(ra.toFloat32())).toEqual([2, 3, 4, 5, 6, 7]);
    expect(Array.from(rb.toFloat32())).toEqual([2, 5, 3, 6, 4, 7]);
    expect(rb.isContiguous()).toBe(false);
    expect(Array.from(rc.toFloat32())).toEqual([7, 7]);
  });

  it('an empty tensor has no storage; a class name without a version tag is read as version 0', () => {
    const empty = new LuaTensor('Float', null, [], [], 0);
    expect((readT7(t7(empty)) as T7Tensor).numel).toBe(0);
    const w = new T7Writer();
    w.int(4).int(100).str('Legacy').value(new LuaTable([['x', 1]]));
    const o = readT7(w.bytes()) as T7Object;
    expect([o.className, o.version, o.get('x')]).toEqual(['Legacy', 0, 1]);
  });

  it('back-references to tables and objects resolve to the same object, cycles included', () => {
    const shared = new LuaTable([['k', 'v']]);
    const obj = new LuaObject('nn.Identity');
    const root = new LuaTable([[1, shared], [2, shared], [3, obj], [4, obj]]);
    root.set('self', root);
    const r = readT7(t7(root)) as T7Table;
    const [s1, s2, o1, o2] = r.array();
    expect(s1).toBe(s2);
    expect(o1).toBe(o2);
    expect(r.get('self')).toBe(r);
  });
});

describe('refusing what is not (supported) .t7, clearly', () => {
  it('a file written by Lua Torch on Windows (4-byte longs) is detected and refused', () => {
    const bytes = t7(new LuaTable([['weight', contiguous('Float', [2, 2], [1, 2, 3, 4])]]), 4);
    expect(() => readT7(bytes, { name: 'win.t7' })).toThrow(/^win\.t7: written by Lua Torch on Windows, whose C 'long' is 4 bytes.*not supported/);
    // Read as what it is, it is fine: the detection is not a guess.
    expect(((readT7(bytes, { longSize: 4 }) as T7Table).get('weight') as T7Tensor).sizes).toEqual([2, 2]);
  });

  it('the ASCII serialisation is named', () => {
    expect(() => readT7(Buffer.from('3\n1\n1\n1\n2\n'), { name: 'a.t7' })).toThrow(/ASCII file; only the binary format/);
  });

  it('unknown type tags, trailing bytes, nil keys and mismatched storages are errors', () => {
    expect(() => readT7(new T7Writer().int(42).bytes())).toThrow(/unknown type tag 42/);
    expect(() => readT7(new T7Writer().value(1).int(0).bytes())).toThrow(/4 bytes left after the stored object/);
    expect(() => readT7(new T7Writer().int(3).int(1).int(1).value(null).value(1).bytes())).toThrow(/table key is nil/);
    const bad = new LuaTensor('Float', new LuaStorage('Double', [1, 2]), [2], [1]);
    expect(() => readT7(t7(bad))).toThrow(/torch\.FloatTensor points into a torch\.DoubleStorage/);
  });
});

describe('hostile input', () => {
  const header = (f: (w: T7Writer) => void): Uint8Array => {
    const w = new T7Writer();
    f(w);
    return w.bytes();
  };
  // A FloatStorage written by hand with object index 2 (the hand-written tensor before it is index 1).
  const storage = (w: T7Writer, values: number[]): T7Writer =>
    w.int(4).int(2).str('V 1').str('torch.FloatStorage').long(values.length).raw(new Uint8Array(Float32Array.from(values).buffer));

  it('declared sizes larger than the file are refused before anything is allocated', () => {
    const cases: [Uint8Array, RegExp][] = [
      [header((w) => w.int(2).int(0x7fffffff)), /string needs 2147483647 bytes, but the file ends there/],
      [header((w) => w.int(2).int(-5)), /negative length/],
      [header((w) => w.int(3).int(1).int(0x7fffffff)), /table declares 2147483647 entries/],
      [header((w) => w.int(4).int(1).str('V 1').str('torch.FloatStorage').long(2 ** 52)), /declares 4503599627370496 elements/],
      [header((w) => w.int(4).int(1).str('V 1').str('torch.FloatStorage').long(-1)), /negative size/],
      [header((w) => w.int(4).int(1).str('V 1').str('torch.FloatTensor').int(1_000_000_000)), /1000000000 dimensions/],
      [header((w) => storage(w.int(4).int(1).str('V 1').str('torch.FloatTensor').int(2).long(2 ** 40).long(2 ** 40).long(1).long(1).long(1), [1])), /\[1099511627776, 1099511627776\] \(strides \[1, 1\], offset 0\) is too large/],
      [header((w) => storage(w.int(4).int(1).str('V 1').str('torch.FloatTensor').int(1).long(1000).long(0).long(1), [1])), /\[1000\] \(strides \[0\], offset 0\) has more elements than its 1-element storage/],
      [header((w) => storage(w.int(4).int(1).str('V 1').str('torch.FloatTensor').int(1).long(3).long(1).long(1), [1, 2])), /reaches element 3 of a 2-element storage/],
      [header((w) => storage(w.int(4).int(1).str('V 1').str('torch.FloatTensor').int(1).long(2).long(-1).long(1), [1, 2])), /negative stride/],
      [header((w) => w.int(4).int(1).str('V 1').str('tds.Vec').long(2 ** 40)), /tds\.Vec declares 1099511627776 entries/],
      [header((w) => w.int(4).int(1).str('V 1').str('torch.FloatTensor').int(1).raw(new Uint8Array(8)).raw(new Uint8Array(8)).long(2 ** 62)), /storage offset .* beyond any real size/],
    ];
    for (const [bytes, want] of cases) {
      let err: unknown;
      try {
        readT7(bytes, { longSize: 8 });
      } catch (e) {
        err = e;
      }
      expect(err, `expected ${want}`).toBeInstanceOf(T7Error);
      expect((err as Error).message).toMatch(want);
    }
  });

  it('nesting 200,000 tables deep neither recurses nor overflows the stack', () => {
    const depth = 200_000;
    // Table i = {[1] = table i + 1}: tag, index, one entry, key 1.0, then the value.
    const bytes = new Uint8Array(depth * 24 + 4);
    const v = new DataView(bytes.buffer);
    for (let i = 0; i < depth; i++) {
      v.setInt32(24 * i, 3, true);
      v.setInt32(24 * i + 4, i + 1, true);
      v.setInt32(24 * i + 8, 1, true);
      v.setInt32(24 * i + 12, 1, true);
      v.setFloat64(24 * i + 16, 1, true);
    }
    let t = readT7(bytes) as T7Table;
    let n = 1;
    while (t.get(1) instanceof T7Table) {
      t = t.get(1) as T7Table;
      n++;
    }
    expect(n).toBe(depth);
    // The same file cut short fails cleanly, naming where it was in a message of bounded length.
    let message = '';
    try {
      readT7(bytes.subarray(0, 1_000_001));
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/table declares 1 entry, more than the 5 bytes left can hold \(at byte 999996, in root\[1\]\[1\].*\.\.\..*\[1\]\)$/);
    expect(message.length).toBeLessThan(400);
  });

  it('the number of objects is bounded', () => {
    const many = new LuaTable(Array.from({ length: 100 }, (_, i) => [i + 1, new LuaTable()] as [number, LuaTable]));
    expect(() => readT7(t7(many), { maxObjects: 50 })).toThrow(/more than 50 objects/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Fuzzing: truncations and byte flips never crash (only T7Error) and never hang (each parse is linear in the
// file; the test timeout bounds the whole run).

/** Parses, then materialises every tensor reachable from the result (views were bounds-checked on load). */
function parseAndTouch(bytes: Uint8Array): 'ok' | 'error' {
  let v: T7Value;
  try {
    v = readT7(bytes);
  } catch (e) {
    if (e instanceof T7Error) return 'error';
    throw new Error(`not a clean error: ${(e as Error).stack}`);
  }
  const seen = new Set<unknown>();
  const stack: T7Value[] = [v];
  while (stack.length) {
    const x = stack.pop()!;
    if (x === null || typeof x !== 'object' || seen.has(x)) continue;
    seen.add(x);
    if (x instanceof T7Tensor) x.toFloat32();
    else if (x instanceof T7Storage) continue;
    else for (const [k, val] of (x instanceof T7Object ? x.fields : x).entries) stack.push(k as T7Value, val);
  }
  return 'ok';
}

function allTypesFile(): Uint8Array {
  const s = new LuaStorage('Float', [1, 2, 3, 4, 5, 6]);
  const root = new LuaTable([
    ['views', new LuaTable([[1, new LuaTensor('Float', s, [2, 3], [3, 1])], [2, new LuaTensor('Float', s, [3, 2], [1, 3])]])],
    ['obj', new LuaObject('nn.Linear', new LuaTable([['weight', contiguous('Double', [2], [1, 2])], ['train', true]]))],
    ['half', contiguous('Half', [2], [1, 2])],
    ['long', new LuaStorage('Long', [1, 2, 3])],
    ['text', 'hello'],
  ]);
  root.set('me', root);
  return t7(root);
}

describe('fuzzing', () => {
  const files: [string, Uint8Array][] = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.t7'))
    .map((f) => [f, readFileSync(join(FIXTURES, f))]);
  files.push(['generated (all types, views, cycle)', allTypesFile()]);

  it('every truncation of every file fails cleanly', () => {
    for (const [name, bytes] of files) {
      for (let n = 0; n < bytes.length; n++) {
        const r = parseAndTouch(bytes.subarray(0, n));
        expect(r, `${name} cut to ${n} bytes`).toBe('error');
      }
    }
  });

  it('random byte flips never crash and never hang', { timeout: 120_000 }, () => {
    const rnd = rng(12345, 'fuzz');
    let outcomes = { ok: 0, error: 0 };
    for (const [, bytes] of files) {
      for (let k = 0; k < 1500; k++) {
        const b = Uint8Array.from(bytes);
        const flips = 1 + Math.floor(rnd() * 4);
        for (let j = 0; j < flips; j++) {
          const at = Math.floor(rnd() * b.length);
          b[at] = rnd() < 0.5 ? Math.floor(rnd() * 256) : b[at] ^ (1 << Math.floor(rnd() * 8));
        }
        outcomes[parseAndTouch(b)]++;
      }
    }
    // Both outcomes occur: flips in data change values, flips in headers are caught.
    expect(outcomes.ok).toBeGreaterThan(0);
    expect(outcomes.error).toBeGreaterThan(0);
    outcomes = { ok: 0, error: 0 };
  });
});
