// Training end to end: a short real run on Fashion-MNIST learns; a killed run resumes to the identical state;
// bad data paths and mismatched resumes are refused clearly.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeMeanImage } from '../src/export/metadata.js';
import { onnx } from '../src/export/proto.js';
import { SafeTensorsFile } from '../src/export/safetensors.js';
import { DEFAULT_SGD } from '../src/export/training.js';
import { type ModelRequest, resolveConfig } from '../src/models/config.js';
import { readModelInfo } from '../src/serve/model-info.js';
import { MEAN_IMAGE, loadCheckpoint } from '../src/train/checkpoint.js';
import { DEBIAN_FASHION_MNIST, isInMemory, openDataset, pixelMean } from '../src/train/datasets.js';
import { type TrainEvent, type TrainOptions, train } from '../src/train/trainer.js';
import { cifarRecords, writeCifar10 } from './data-writers.js';
import { metadataOf, runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-train-run-');
// ResNet-8: the CIFAR family with one basic unit per stage, 1-channel input.
const SMALL: ModelRequest = { dataset: 'fashion-mnist', stages: [1], unit: 'basic' };

describe('a short real training run', () => {
  it('on 6,400 Fashion-MNIST images: the loss falls and test accuracy rises far above chance', async () => {
    const events: TrainEvent[] = [];
    const r = await train({
      cfg: resolveConfig(SMALL),
      data: { kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST },
      out: join(dir, 'short'),
      batch: 32,
      seed: 1,
      schedule: { lr: 0.1, milestones: [150], gamma: 0.1, iterations: 200, warmup: null },
      sgd: DEFAULT_SGD,
      evalEvery: 100,
      logEvery: 20,
      checkpointEvery: 0,
      trainLimit: 6400,
      testLimit: 2000,
      ep: 'cpu',
      threads: 2,
      plot: true,
      onEvent: (e) => events.push(e),
    });
    const losses = events.flatMap((e) => (e.type === 'train' ? [e.loss] : []));
    expect(losses[0]).toBeGreaterThan(1.5);
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.5);
    expect(r.lastEval!.top1Error).toBeLessThan(35); // chance is 90%
    expect(existsSync(r.model)).toBe(true);
    const log = readFileSync(join(dir, 'short', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string });
    expect(log.filter((l) => l.type === 'train')).toHaveLength(10);
    expect(log.filter((l) => l.type === 'eval')).toHaveLength(2);
    expect(readFileSync(join(dir, 'short', 'curves.html'), 'utf8')).toContain('<polyline');
  }, 300_000);
});

function cli(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function finished(p: ChildProcess): Promise<{ code: number | null; signal: string | null; out: string }> {
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  return new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal, out })));
}

const RUN = ['train', '--dataset', 'fashion-mnist', '--stages', '1', '--unit', 'basic', '--batch', '32', '--iterations', '24', '--checkpoint-every', '8', '--log-every', '4', '--eval-every', '0', '--train-limit', '2048', '--test-limit', '256', '--threads', '2', '--quiet'];

function tensors(path: string): Map<string, Float32Array> {
  const f = SafeTensorsFile.open(path);
  const m = new Map([...f.tensors.keys()].map((k) => [k, f.readFloat32(k)]));
  f.close();
  return m;
}

describe('checkpoint, kill, resume', () => {
  it('a run killed after a checkpoint and resumed ends in exactly the state of an uninterrupted run', async () => {
    const straight = await finished(cli([...RUN, '--out', join(dir, 'straight')]));
    expect(straight.code, straight.out).toBe(0);

    const killed = cli([...RUN, '--out', join(dir, 'killed')]);
    const done = finished(killed);
    const log = join(dir, 'killed', 'log.jsonl');
    // Kill it hard once the checkpoint at iteration 8 is on disk and training has gone past it.
    for (;;) {
      await new Promise((r) => setTimeout(r, 50));
      const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
      if (/"type":"train","iteration":12/.test(text) && text.includes('"type":"checkpoint","iteration":8')) break;
      if (killed.exitCode !== null) throw new Error(`the run ended before it could be killed: ${(await done).out}`);
    }
    killed.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    const partial = tensors(join(dir, 'killed', 'checkpoint.safetensors'));
    expect(partial.size).toBeGreaterThan(0);

    const resumed = await finished(cli([...RUN, '--out', join(dir, 'killed'), '--resume', join(dir, 'killed', 'checkpoint.safetensors')]));
    expect(resumed.code, resumed.out).toBe(0);
    const a = tensors(join(dir, 'straight', 'checkpoint.safetensors'));
    const b = tensors(join(dir, 'killed', 'checkpoint.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [name, va] of a) expect(Buffer.from(b.get(name)!.buffer).equals(Buffer.from(va.buffer)), `${name} differs after resume`).toBe(true);
    // The log reads as one run: each logged iteration once, where the resume took over said.
    expect(resumed.out).toMatch(/resumed from iteration (8|16) of 24/);
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; iteration: number });
    expect(lines.filter((l) => l.type === 'train').map((l) => l.iteration)).toEqual([4, 8, 12, 16, 20, 24]);
    expect(lines.filter((l) => l.type === 'resume')).toHaveLength(1);
  }, 300_000);

  it('a resume with another recipe is refused', async () => {
    const r = await finished(cli([...RUN, '--lr', '0.05', '--out', join(dir, 'other'), '--resume', join(dir, 'straight', 'checkpoint.safetensors')]));
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain("--lr 0.05 (the checkpoint's: 0.1)");
  }, 60_000);
});

describe('per-pixel mean (--normalise per-pixel)', () => {
  it('is the training split\'s mean image, kept in the checkpoint, reused on resume, and stated in the model and its exports', async () => {
    const data = join(dir, 'cifar-per-pixel');
    writeCifar10(data, 8); // 40 training images
    const d = await openDataset({ kind: 'cifar10', dir: data }, 'train');
    if (!isInMemory(d)) throw new Error('CIFAR is held in memory');
    const mean = pixelMean(d);
    const o: TrainOptions = {
      cfg: resolveConfig({ dataset: 'cifar10', stages: [1], unit: 'basic' }),
      data: { kind: 'cifar10', dir: data },
      out: join(dir, 'per-pixel'),
      batch: 4,
      seed: 1,
      schedule: { lr: 0.1, milestones: [], gamma: 0.1, iterations: 2, warmup: null },
      sgd: DEFAULT_SGD,
      evalEvery: 0,
      logEvery: 1,
      checkpointEvery: 0,
      testLimit: 4,
      normalise: 'per-pixel',
      ep: 'cpu',
      threads: 2,
      plot: false,
    };
    const r = await train(o);
    expect(loadCheckpoint(r.checkpoint).tensors.get(MEAN_IMAGE)).toEqual(mean);
    // model.onnx states the very mean image it was trained with: (v - mean image) / 255, no per-channel mean or std.
    const pre = readModelInfo(r.model).preprocessing;
    expect(pre).toMatchObject({ resize: 32, crop: 32, scale: 1 / 255, mean: [0, 0, 0], std: [1, 1, 1], channelOrder: 'RGB', meanImage: { shape: [3, 32, 32] } });
    expect(decodeMeanImage(pre.meanImage, 3, 32)).toEqual(mean);
    expect(metadataOf(r.model).weights).toMatch(/^trained: .* 2 iterations/);
    expect(onnx.ModelProto.decode(readFileSync(r.model)).docString).toMatch(/\(pixels - mean image\) \* 0\.00392157, minus mean \[0,0,0\], divided by std \[1,1,1\]/);

    // Weights saved by `import --save-weights` carry it as metadata (no tensor).
    const saved = join(dir, 'per-pixel-saved.safetensors');
    const i = await runCli('import', r.checkpoint, '-o', join(dir, 'per-pixel-imported.onnx'), '--save-weights', saved, '--quiet');
    expect(i.code, i.err).toBe(0);
    // `export --weights` of either says the same, with the architecture from the file or given by flags.
    for (const [file, weights] of [['checkpoint', r.checkpoint], ['saved', saved]] as const)
      for (const [name, flags] of [['from-file', []], ['from-flags', ['--dataset', 'cifar10', '--stages', '1', '--unit', 'basic']]] as const) {
        const out = join(dir, `per-pixel-${file}-${name}.onnx`);
        const e = await runCli('export', '--weights', weights, ...flags, '-o', out, '--quiet');
        expect(e.code, e.err).toBe(0);
        expect(JSON.parse(metadataOf(out).preprocessing), `${file} ${name}`).toEqual(JSON.parse(metadataOf(r.model).preprocessing));
      }

    // Other training data now: the resumed run keeps the mean image it started with.
    writeFileSync(join(data, 'data_batch_1.bin'), cifarRecords(Array.from({ length: 8 }, () => [3]), 999));
    const resumed = await train({ ...o, schedule: { ...o.schedule, iterations: 3 }, resume: r.checkpoint });
    expect(resumed.iterations).toBe(3);
    expect(loadCheckpoint(resumed.checkpoint).tensors.get(MEAN_IMAGE)).toEqual(mean);
    await expect(train({ ...o, normalise: 'per-channel', resume: r.checkpoint })).rejects.toThrow(/--normalise per-channel \(the checkpoint's: per-pixel\)/);
  }, 60_000);
});

describe('bad data', () => {
  it('a missing dataset folder names the path and what was expected', async () => {
    const r = await finished(cli(['train', '--depth', '20', '--dataset', 'cifar10', '--data', join(dir, 'no-such-dir'), '--iterations', '1', '--quiet']));
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/no-such-dir/);
  }, 60_000);
  it('--data is required where nothing can be downloaded', async () => {
    const r = await finished(cli(['train', '--depth', '20', '--dataset', 'cifar10', '--iterations', '1']));
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/--data is required for cifar10/);
  }, 60_000);
});

// `export --training` (the graph with its state file beside it, driven step by step): test/training-export.test.ts.
