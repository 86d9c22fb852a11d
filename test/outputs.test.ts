// Outputs: an existing file is never replaced without --force, default paths never name a model kept in models/,
// paths of the wrong kind are refused before any work, temporaries of killed processes are removed, and the
// streaming writers let an interrupt in between tensors.
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultOutput, weightsTag } from '../src/cli/output-paths.js';
import { writeOnnxAsync } from '../src/export/onnx.js';
import { SafeTensorsFile, writeSafeTensors, writeSafeTensorsAsync } from '../src/export/safetensors.js';
import { saveWeights } from '../src/export/weights.js';
import { resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { PathError, checkOutputFile, removeStaleTemps } from '../src/util/files.js';
import { metadataOf, runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-outputs-');
const fm20 = resolveConfig({ depth: 20, dataset: 'fashion-mnist' });

/** A pid that is not running (pids are below 2^22 on Linux). */
const DEAD_PID = 4_194_304 + 17;

/** Runs the CLI with `cwd` as the working directory (default paths are relative to it). */
async function runIn(cwd: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const before = process.cwd();
  process.chdir(cwd);
  try {
    return await runCli(...args);
  } finally {
    process.chdir(before);
  }
}

describe('default output paths (issue 9, item 1)', () => {
  it('random-init exports carry their seed, so they never name a kept model', () => {
    expect(defaultOutput(fm20)).toBe(join('models', 'preact-resnet20-fashion-mnist-seed0.onnx'));
    expect(defaultOutput(fm20, { seed: 7 })).toBe(join('models', 'preact-resnet20-fashion-mnist-seed7.onnx'));
    // The model `serve` exports and serves when given no --model.
    expect(defaultOutput(resolveConfig({ depth: 200 }))).toBe(join('models', 'preact-resnet200-imagenet-seed0.onnx'));
    expect(defaultOutput(fm20)).not.toBe(join('models', 'preact-resnet20-fashion-mnist.onnx'));
  });

  it('exports of loaded weights are named after the file, or after a run folder for a generic checkpoint name', () => {
    expect(weightsTag('runs/fm-long/checkpoint.safetensors')).toBe('fm-long');
    expect(weightsTag('resnet-200.t7')).toBe('resnet-200');
    expect(weightsTag('my weights (v2).safetensors')).toBe('my-weights-v2-');
    expect(defaultOutput(fm20, { weights: 'runs/fm-long/checkpoint.safetensors' })).toBe(join('models', 'preact-resnet20-fashion-mnist-from-fm-long.onnx'));
    // The kept checkpoint beside the kept model: exporting it must not land on the kept model.
    expect(defaultOutput(fm20, { weights: 'models/preact-resnet20-fashion-mnist.safetensors' })).toBe(
      join('models', 'preact-resnet20-fashion-mnist-from-preact-resnet20-fashion-mnist.onnx'),
    );
  });

  it('`export --depth 20 --dataset fashion-mnist` leaves a kept model of that name alone', async () => {
    const cwd = join(dir, 'checkout');
    mkdirSync(join(cwd, 'models'), { recursive: true });
    const kept = join(cwd, 'models', 'preact-resnet20-fashion-mnist.onnx');
    writeFileSync(kept, 'the trained model');
    const r = await runIn(cwd, 'export', '--depth', '20', '--dataset', 'fashion-mnist', '-q');
    expect(r.code, r.err).toBe(0);
    expect(readFileSync(kept, 'utf8')).toBe('the trained model');
    expect(r.out).toContain(join('models', 'preact-resnet20-fashion-mnist-seed0.onnx'));
    expect(existsSync(join(cwd, 'models', 'preact-resnet20-fashion-mnist-seed0.onnx'))).toBe(true);
    // Run again: the default output now exists and is refused, not replaced.
    const again = await runIn(cwd, 'export', '--depth', '20', '--dataset', 'fashion-mnist', '-q');
    expect([again.code, again.err]).toEqual([2, expect.stringMatching(/preact-resnet20-fashion-mnist-seed0\.onnx already exists \(.*\); pass --force to replace it/)]);
  });

  it('`import` of a resnet-onnx checkpoint kept in models/ does not default onto the model kept beside it', async () => {
    const cwd = join(dir, 'checkout-import');
    mkdirSync(join(cwd, 'models'), { recursive: true });
    const kept = join(cwd, 'models', 'preact-resnet20-fashion-mnist.onnx');
    writeFileSync(kept, 'the trained model');
    saveWeights(buildResNet(fm20), join(cwd, 'models', 'preact-resnet20-fashion-mnist.safetensors'), { config: JSON.stringify(fm20), weights: 'trained: fashion-mnist, 5616 iterations' });
    for (const args of [['import', 'models/preact-resnet20-fashion-mnist.safetensors'], ['export', '--weights', 'models/preact-resnet20-fashion-mnist.safetensors', '--force']]) {
      const r = await runIn(cwd, ...args, '-q');
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain(join('models', 'preact-resnet20-fashion-mnist-from-preact-resnet20-fashion-mnist.onnx'));
    }
    expect(readFileSync(kept, 'utf8')).toBe('the trained model');
  });
});

describe('existing outputs are refused unless --force (issue 9, item 1)', () => {
  const existing = (name: string): string => {
    const p = join(dir, name);
    writeFileSync(p, 'precious');
    return p;
  };
  const checkpoint = join(dir, 'ck20.safetensors');
  saveWeights(buildResNet(resolveConfig({ depth: 20 })), checkpoint, { config: JSON.stringify(resolveConfig({ depth: 20 })) });

  const cases: [string, (p: string) => string[], string][] = [
    ['export -o', (p) => ['export', '--depth', '20', '-o', p], '-o'],
    ['export --training -o', (p) => ['export', '--training', '--depth', '20', '--batch', '2', '-o', p], '-o'],
    ['export --save-weights', (p) => ['export', '--depth', '20', '-o', join(dir, `sw-${Math.random()}.onnx`), '--save-weights', p], '--save-weights'],
    ['export --weights -o', (p) => ['export', '--weights', checkpoint, '-o', p], '-o'],
    ['import -o', (p) => ['import', checkpoint, '-o', p], '-o'],
    ['import --save-weights', (p) => ['import', checkpoint, '-o', join(dir, `isw-${Math.random()}.onnx`), '--save-weights', p], '--save-weights'],
  ];
  for (const [name, args, flag] of cases)
    it(`${name}: refused with what exists and how to proceed; replaced with --force`, async () => {
      const p = existing(`${name.replace(/\W+/g, '_')}.out`);
      const r = await runCli(...args(p), '-q');
      expect(r.code, r.err).toBe(2);
      expect(r.err).toContain(`${flag} ${p} already exists (8 bytes); pass --force to replace it, or choose another path`);
      expect(readFileSync(p, 'utf8')).toBe('precious');
      const forced = await runCli(...args(p), '-q', '--force');
      expect(forced.code, forced.err).toBe(0);
      expect(statSync(p).size).toBeGreaterThan(8);
    });

  it('the refusal comes before the input is read', async () => {
    const garbage = join(dir, 'garbage.safetensors');
    writeFileSync(garbage, 'not a checkpoint at all');
    const r = await runCli('export', '--weights', garbage, '-o', existing('before-read.onnx'));
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/before-read\.onnx already exists/)]);
  });

  it('an output on its own input, or two outputs on one path, are refused', async () => {
    let r = await runCli('import', checkpoint, '-o', checkpoint, '--force');
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/-o .*ck20\.safetensors is the same file as the input/)]);
    const same = join(dir, 'same.bin');
    r = await runCli('import', checkpoint, '-o', same, '--save-weights', same);
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/--save-weights .*same\.bin is the same file as -o/)]);
  });
});

describe('export --weights keeps what the weights are (issue 9, item 1)', () => {
  it("a checkpoint's own `weights` record becomes the model's, with or without architecture flags", async () => {
    const cfg = resolveConfig({ depth: 20 });
    const ck = join(dir, 'trained.safetensors');
    const status = 'trained: fashion-mnist, 40 iterations, test top-1 error 7.16%';
    saveWeights(buildResNet(cfg), ck, { config: JSON.stringify(cfg), weights: status });
    for (const flags of [[], ['--depth', '20']]) {
      const out = join(dir, `trained-${flags.length}.onnx`);
      const r = await runCli('export', ...flags, '--weights', ck, '-o', out, '-q');
      expect(r.code, r.err).toBe(0);
      expect(metadataOf(out).weights).toBe(status);
    }
  });

  it('--save-weights records random-init weights as such, so a model exported from them is not taken for trained', async () => {
    const w = join(dir, 'random.safetensors');
    expect((await runCli('export', '--depth', '20', '--seed', '3', '-o', join(dir, 'random.onnx'), '--save-weights', w, '-q')).code).toBe(0);
    const out = join(dir, 'from-random.onnx');
    const r = await runCli('export', '--weights', w, '-o', out, '-q');
    expect(r.code, r.err).toBe(0);
    expect(metadataOf(out).weights).toBe('random-init (seed 3)');
  });
});

describe('paths of the wrong kind (issue 9, item 8)', () => {
  it('a folder where a file is expected is refused before any work, exit 2', async () => {
    const folder = join(dir, 'a-folder');
    mkdirSync(folder, { recursive: true });
    const cases: [string[], RegExp][] = [
      [['export', '--depth', '200', '-o', folder], /-o .*a-folder is a folder; give a file path/],
      [['export', '--depth', '20', '-o', join(dir, 'x.onnx'), '--save-weights', folder], /--save-weights .*a-folder is a folder/],
      [['export', '--depth', '20', '-o', `${join(dir, 'not-yet')}/`], /-o .*not-yet\/ is a folder/],
      [['export', '--depth', '20', '--weights', folder, '-o', join(dir, 'y.onnx')], /--weights .*a-folder is a folder; give a file/],
      [['import', folder], /import .*a-folder is a folder; give a file/],
      [['import', join(dir, 'no-such.t7')], /import .*no-such\.t7: no such file/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(...args, '-q');
      expect([r.code, r.err], args.join(' ')).toEqual([2, expect.stringMatching(message)]);
      expect(r.err).not.toMatch(/EISDIR/);
    }
    expect(readdirSync(folder)).toEqual([]);
  });

  it('a missing output folder is an I/O failure (exit 1) that names the folder; a file as the folder is a bad request', async () => {
    let r = await runCli('export', '--depth', '20', '-o', join(dir, 'missing', 'x.onnx'), '-q');
    expect([r.code, r.err]).toEqual([1, expect.stringContaining(`folder ${join(dir, 'missing')} does not exist`)]);
    const file = join(dir, 'plain-file');
    writeFileSync(file, '');
    r = await runCli('export', '--depth', '20', '-o', join(file, 'x.onnx'), '-q');
    expect([r.code, r.err]).toEqual([2, expect.stringContaining(`${file} is not a folder`)]);
  });
});

describe('export --training numbers and flags (issue 9, items 4 and 5)', () => {
  it('momentum outside [0, 1) and negative weight decay are refused with the allowed range', async () => {
    for (const [flag, v, range] of [
      ['--momentum', '-0.5', 'in [0, 1)'],
      ['--momentum', '1', 'in [0, 1)'],
      ['--momentum', '1.5', 'in [0, 1)'],
      ['--weight-decay', '-1e-4', '>= 0'],
    ]) {
      const r = await runCli('export', '--training', '--depth', '20', '--batch', '2', flag, v, '-o', join(dir, 'never.onnx'));
      expect([r.code, r.err], `${flag} ${v}`).toEqual([2, expect.stringContaining(`${flag} must be a number ${range}`)]);
    }
    expect(existsSync(join(dir, 'never.onnx'))).toBe(false);
  });

  it('the input size is --input-size, as for info', async () => {
    const out = join(dir, 'step.onnx');
    const r = await runCli('export', '--training', '--depth', '20', '--batch', '2', '--input-size', '16', '-o', out, '-q');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/batch 2, 16x16/);
    expect(metadataOf(out).input_size).toBe('16');
    const help = await runCli('export', '--help');
    expect(help.out).toContain('--input-size <n>');
    expect(help.out).not.toMatch(/--size\b/);
    expect((await runCli('export', '--depth', '20', '--input-size', '16', '-o', join(dir, 'inf.onnx'))).err).toMatch(/--input-size applies to --training exports only/);
  });
});

describe('temporaries', () => {
  it('a killed process\'s temporary of the same output is removed by the next writer; a live one\'s is kept', async () => {
    const target = join(dir, 'stale.safetensors');
    const stale = `${target}.${DEAD_PID}.tmp`;
    const live = `${target}.${process.ppid}.tmp`;
    const other = join(dir, `other.safetensors.${DEAD_PID}.tmp`);
    for (const p of [stale, live, other]) writeFileSync(p, 'partial');
    writeSafeTensors(target, [{ name: 'a', shape: [2], values: () => new Float32Array([1, 2]) }]);
    expect([existsSync(stale), existsSync(live), existsSync(other)]).toEqual([false, true, true]);
    expect(removeStaleTemps(join(dir, 'other.safetensors'))).toEqual([other]);
    // checkOutputFile (called before any work) cleans up too.
    writeFileSync(stale, 'partial');
    checkOutputFile(target, { force: true });
    expect(existsSync(stale)).toBe(false);
    expect(() => checkOutputFile(target)).toThrow(PathError);
  });

  it('the streaming writers yield to the event loop between tensors (an interrupt is handled mid-file)', async () => {
    let turns = 0;
    const count = (): void => {
      turns++;
      if (turns < 1000) setImmediate(count);
    };
    setImmediate(count);
    const before = turns;
    await writeOnnxAsync(buildResNet(resolveConfig({ depth: 20 })), join(dir, 'async.onnx'));
    const duringOnnx = turns - before;
    const mid = turns;
    const tensors = Array.from({ length: 20 }, (_, i) => ({ name: `t${i}`, shape: [4], values: () => new Float32Array(4).fill(i) }));
    await writeSafeTensorsAsync(join(dir, 'async.safetensors'), tensors, { k: 'v' });
    expect(duringOnnx, 'event-loop turns while writing a ResNet-20').toBeGreaterThan(20);
    expect(turns - mid, 'event-loop turns while writing 20 tensors').toBeGreaterThanOrEqual(20);
    const f = SafeTensorsFile.open(join(dir, 'async.safetensors'));
    expect([...f.readFloat32('t19')]).toEqual([19, 19, 19, 19]);
    f.close();
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp') && n.includes(`.${process.pid}.`))).toEqual([]);
  });
});
