// The importers' messages read as English and name the file once: counts agree with their nouns, articles with
// what follows ("an nn.Sequential", "an A"), nothing is left empty ("it holds no tensors"), and a safetensors file
// whose header length runs past its end says so (it used to be read as a Lua Torch file and called a function).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CheckpointError, SafeTensorsFile, writeSafeTensors } from '../src/export/safetensors.js';
import { saveWeights } from '../src/export/weights.js';
import { detectFormat, importModel } from '../src/import/index.js';
import { mapFbResNet } from '../src/import/fbresnet.js';
import { T7Object, T7Storage, T7Table, describeValue } from '../src/import/t7.js';
import { article, count } from '../src/import/text.js';
import { resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { T7_FIXTURES, runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-import-messages-');

afterEach(() => vi.restoreAllMocks());

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
  return 'no error';
}

function file(name: string, bytes: Uint8Array | string): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** An 8-byte little-endian header length, then `rest`. */
function safetensorsBytes(headerLength: number, rest: string): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLength));
  return Buffer.concat([len, Buffer.from(rest)]);
}

describe('counts and articles', () => {
  it('count() and article()', () => {
    expect([count(0, 'byte'), count(1, 'byte'), count(2, 'entry', 'entries')]).toEqual(['0 bytes', '1 byte', '2 entries']);
    const cases = { 'nn.Sequential': 'an', 'cudnn.SpatialConvolution': 'a', 'torch.FloatTensor': 'a', 'tds.Hash': 'a', A: 'an', B: 'a', 'nngraph gModule': 'an', Identity: 'an', unit: 'a', SE: 'an' };
    for (const [word, a] of Object.entries(cases)) expect(`${article(word)} ${word}`).toBe(`${a} ${word}`);
  });

  it('.t7 values are described with the right number and article', () => {
    const table = (n: number): T7Table => {
      const t = new T7Table();
      for (let i = 1; i <= n; i++) t.entries.set(i, i);
      return t;
    };
    expect([0, 1, 2].map((n) => describeValue(table(n)))).toEqual(['an empty table', 'a table with 1 entry', 'a table with 2 entries']);
    expect(describeValue(new T7Object('nn.Sequential', 1))).toBe('an nn.Sequential');
    expect(describeValue(new T7Storage('torch.FloatStorage', 'float32', 1, new Uint8Array(4), 4))).toBe('a torch.FloatStorage of 1 element');
  });

  it('a module of an unknown class: "model is an A", not "a A"', () => {
    expect(errorOf(() => mapFbResNet(new T7Object('A', 1)))).toMatch(/^ImportError: model is an A, which fb\.resnet\.torch's pre-activation ResNets do not use/);
    expect(errorOf(() => mapFbResNet(new T7Object('nn.Bilinear', 1)))).toMatch(/^ImportError: model is an nn\.Bilinear, which/);
  });
});

describe('safetensors files that do not fit say what they are', () => {
  it('a header length past the end of the file is reported as such, not as a Lua function', () => {
    // 8 then '{"': the length's low int32 is 8, which is also .t7's tag for a serialised function.
    const cut = file('cut.safetensors', safetensorsBytes(8, '{"'));
    expect(errorOf(() => detectFormat(cut))).toBe(
      "ImportError: cut.safetensors: a safetensors file whose declared header length 8 exceeds the file's 2 bytes after the length field (truncated or corrupted file)",
    );
    // A real checkpoint cut inside its header.
    const whole = join(dir, 'whole.safetensors');
    const cfg = resolveConfig({ depth: 20 });
    saveWeights(buildResNet(cfg), whole, { config: JSON.stringify(cfg) });
    const bytes = readFileSync(whole);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const truncated = file('truncated.safetensors', bytes.subarray(0, 8 + Math.floor(headerLength / 2)));
    expect(errorOf(() => importModel(truncated))).toMatch(
      new RegExp(`^ImportError: truncated\\.safetensors: a safetensors file whose declared header length ${headerLength} exceeds the file's ${Math.floor(headerLength / 2)} bytes after the length field`),
    );
    // The reader itself says the same.
    let err: unknown;
    try {
      SafeTensorsFile.open(truncated);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toMatch(new RegExp(`declared header length ${headerLength} exceeds the file's ${Math.floor(headerLength / 2)} bytes after the length field`));
  });

  it('a safetensors file without tensors "holds no tensors"; with some, it names them and their number', () => {
    const empty = join(dir, 'empty.safetensors');
    writeSafeTensors(empty, []);
    expect(errorOf(() => importModel(empty))).toBe(
      'ImportError: empty.safetensors: a safetensors file, but neither a timm ResNetV2 state dict (stem.conv, stages.S.blocks.B...) nor a resnet-onnx checkpoint (it holds no tensors)',
    );
    const six = join(dir, 'six.safetensors');
    writeSafeTensors(six, Array.from({ length: 6 }, (_, i) => ({ name: `t${i}`, shape: [1], values: () => new Float32Array(1) })));
    expect(errorOf(() => importModel(six))).toMatch(/\(it holds 6 tensors: 't0', 't1', 't2', 't3', \.\.\.\)$/);
  });

  it('a file too short for any format', () => {
    expect(errorOf(() => detectFormat(file('one.bin', 'x')))).toBe('ImportError: one.bin: 1 byte long, too short to be a .t7 or safetensors file');
  });
});

describe('`import` names the file once', () => {
  const cases: [string, () => string, RegExp][] = [
    ['a zip archive', () => file('model.pth', 'PK\x03\x04rest of a zip archive'), /a zip archive \(PyTorch's torch\.save format\?\)/],
    ['a pickle', () => file('model.pkl', Buffer.from([0x80, 0x04, 0x95, 0, 0, 0, 0, 0, 0, 0])), /a Python pickle/],
    ['a cut safetensors file', () => file('cut2.safetensors', safetensorsBytes(8, '{"')), /declared header length 8 exceeds/],
    ['a Lua function', () => join(T7_FIXTURES, 'function.t7'), /a serialised Lua function/],
    ['a table, not a module', () => join(T7_FIXTURES, 'hello=123.t7'), /model should be an nn module, found a table with 1 entry$/m],
    ['an unknown format', () => file('notes.txt', 'some text, not a model'), /not a format resnet-onnx imports/],
  ];
  for (const [what, make, message] of cases)
    it(what, async () => {
      const path = make();
      const r = await runCli('import', path, '-o', join(dir, 'never.onnx'));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(message);
      expect(r.err.startsWith(`error: cannot import ${path}: `), r.err).toBe(true);
      const name = path.split('/').pop()!;
      expect(r.err.split(name).length - 1, r.err).toBe(1);
    });
});
