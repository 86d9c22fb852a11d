// Training runs as a user's work (issue 9, items 2-5 and 8): a folder holding a run is never trained over unless
// asked; a resume names every field that differs from its checkpoint, cuts the log back to it, redoes a due
// evaluation, plots the whole run and says what it did; extending a finished run has a stated rule; nonsensical
// numbers are refused before any work.
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatDuration } from '../src/cli/train.js';
import { DEFAULT_SGD } from '../src/export/training.js';
import { type ModelRequest, resolveConfig } from '../src/models/config.js';
import { graphName } from '../src/models/preact.js';
import { readCheckpointInfo } from '../src/train/checkpoint.js';
import { DEBIAN_FASHION_MNIST } from '../src/train/datasets.js';
import { cutLog } from '../src/train/run-folder.js';
import { type TrainOptions, train } from '../src/train/trainer.js';
import { metadataOf, runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-train-runs-');
// ResNet-8 on 1,024 Fashion-MNIST images, 64 test images: seconds per run.
const SMALL: ModelRequest = { dataset: 'fashion-mnist', stages: [1], unit: 'basic' };
const FLAGS = ['--dataset', 'fashion-mnist', '--stages', '1', '--unit', 'basic', '--batch', '32', '--train-limit', '1024', '--test-limit', '64', '--threads', '2', '--quiet'];
const TRACKED_CHECKPOINT = 'models/preact-resnet20-fashion-mnist.safetensors'; // ResNet-20, 5616 iterations; only copied

interface Line {
  type: string;
  iteration: number;
  [k: string]: unknown;
}
const logOf = (run: string): Line[] =>
  readFileSync(join(run, 'log.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line);
const bytes = (run: string): Record<string, string> => Object.fromEntries(readdirSync(run).map((f) => [f, readFileSync(join(run, f)).toString('base64')]));

/** A run of 24 iterations (checkpoint and evaluation every 8) that dies at iteration 12, as a killed process leaves it. */
const crashed = join(dir, 'crashed');
const options: TrainOptions = {
  cfg: resolveConfig(SMALL),
  data: { kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST },
  out: crashed,
  batch: 32,
  seed: 0,
  schedule: { lr: 0.1, milestones: [12, 18], gamma: 0.1, iterations: 24, warmup: null },
  sgd: DEFAULT_SGD,
  evalEvery: 8,
  logEvery: 4,
  checkpointEvery: 8,
  trainLimit: 1024,
  testLimit: 64,
  ep: 'cpu',
  threads: 2,
  plot: true,
};

beforeAll(async () => {
  await expect(
    train({
      ...options,
      onEvent: (e) => {
        if (e.type === 'train' && e.iteration === 12) throw new Error('killed');
      },
    }),
  ).rejects.toThrow('killed');
  // As a process killed between the checkpoint at 8 and its evaluation leaves it (this project's order before
  // issue 9), with a line cut short by the kill at the end.
  const lines = readFileSync(join(crashed, 'log.jsonl'), 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('{"type":"eval","iteration":8,'));
  writeFileSync(join(crashed, 'log.jsonl'), `${lines.join('\n')}\n{"type":"train","iteration":16,"epo`);
  expect(readCheckpointInfo(join(crashed, 'checkpoint.safetensors')).run.iteration).toBe(8);
}, 120_000);

const cwd = process.cwd();
afterAll(() => process.chdir(cwd));

describe('a folder that holds a run (item 2)', () => {
  it('an explicit --out holding a run is refused (exit 2) with what is there and both ways on; nothing is touched', async () => {
    const occupied = join(dir, 'occupied');
    cpSync(crashed, occupied, { recursive: true });
    const before = bytes(occupied);
    const r = await runCli('train', ...FLAGS, '--iterations', '24', '--out', occupied);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(`--out ${occupied} holds a run: checkpoint at iteration 8 of 24, log.jsonl`);
    expect(r.err).toContain(`resnet-onnx train --resume ${occupied}`);
    expect(r.err).toMatch(/add --force/);
    expect(bytes(occupied)).toEqual(before);

    const other = join(dir, 'not-a-run');
    mkdirSync(other);
    writeFileSync(join(other, 'notes.txt'), 'mine');
    const n = await runCli('train', ...FLAGS, '--iterations', '24', '--out', other);
    expect(n.code, n.err).toBe(2);
    expect(n.err).toMatch(/is not empty \(it holds notes\.txt\)/);
  });

  it('--force starts over: the old run\'s files are replaced, nothing else in the folder is touched', async () => {
    const occupied = join(dir, 'forced');
    cpSync(crashed, occupied, { recursive: true });
    writeFileSync(join(occupied, 'notes.txt'), 'mine');
    const r = await runCli('train', ...FLAGS, '--iterations', '4', '--log-every', '2', '--eval-every', '0', '--checkpoint-every', '0', '--out', occupied, '--force');
    expect(r.code, r.err).toBe(0);
    const log = logOf(occupied);
    expect(log.filter((l) => l.type === 'train').map((l) => l.iteration)).toEqual([2, 4]);
    expect(log.some((l) => l.type === 'resume')).toBe(false);
    expect(readCheckpointInfo(join(occupied, 'checkpoint.safetensors')).run).toMatchObject({ iteration: 4, settings: { iterations: 4 } });
    expect(readFileSync(join(occupied, 'notes.txt'), 'utf8')).toBe('mine');
  }, 120_000);

  it('the default folder is runs/<name>, named once after the dataset, or the next free runs/<name>-2 ...', async () => {
    const home = join(dir, 'cwd');
    const base = join('runs', graphName(resolveConfig(SMALL)).replace(/_/g, '-'));
    mkdirSync(join(home, base), { recursive: true });
    writeFileSync(join(home, base, 'log.jsonl'), '{"type":"train","iteration":1}\n');
    process.chdir(home);
    try {
      const r = await runCli('train', ...FLAGS, '--iterations', '2', '--eval-every', '0', '--checkpoint-every', '0');
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain(`writing to ${base}-2`);
      expect(base.split('fashion-mnist')).toHaveLength(2);
      expect(existsSync(join(home, `${base}-2`, 'model.onnx'))).toBe(true);
      expect(readFileSync(join(home, base, 'log.jsonl'), 'utf8')).toBe('{"type":"train","iteration":1}\n');
    } finally {
      process.chdir(cwd);
    }
  }, 120_000);
});

describe('resume (items 3-5)', () => {
  it('flags that differ from the checkpoint are each named with both values, exit 2, before any work (items 3, 5)', async () => {
    const folder = join(dir, 'resnet20');
    mkdirSync(folder);
    const ck = join(folder, 'checkpoint.safetensors');
    copyFileSync(TRACKED_CHECKPOINT, ck);
    const r = await runCli('train', '--depth', '32', '--dataset', 'fashion-mnist', '--lr', '0.05', '--momentum', '0.8', '--iterations', '6000', '--resume', ck);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain("--depth 32 (the checkpoint's: 20)");
    expect(r.err).toContain("--lr 0.05 (the checkpoint's: 0.1)");
    expect(r.err).toContain("--momentum 0.8 (the checkpoint's: 0.9)");
    expect(r.err).not.toMatch(/"schedule"|--dataset/);
    expect(r.out).not.toMatch(/ResNet-32/);
    expect(readdirSync(folder)).toEqual(['checkpoint.safetensors']);
    // The library refuses the same way: the network asked for is compared, not replaced by the checkpoint's.
    await expect(train({ ...options, cfg: resolveConfig({ dataset: 'fashion-mnist', depth: 32 }), out: folder, resume: ck })).rejects.toThrow(/--depth 32 \(the checkpoint's: 20\)/);
  });

  it('--resume alone continues a killed run: log cut back, "resumed from", the due evaluation redone, whole-run curves (item 4)', async () => {
    const r = await runCli('train', '--resume', crashed, '--quiet');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/resumed from iteration 8 of 24 .*2 lines past it dropped/);
    expect(r.out).toMatch(/done: 16 iterations in .*resumed from iteration 8: 24 in all/);
    expect(r.out).toContain(`next: resnet-onnx serve --model ${join(crashed, 'model.onnx')}`);

    const log = logOf(crashed); // every line parses: the partial one is gone
    expect(log.filter((l) => l.type === 'train').map((l) => l.iteration)).toEqual([4, 8, 12, 16, 20, 24]);
    expect(log.filter((l) => l.type === 'eval').map((l) => l.iteration)).toEqual([8, 16, 24]);
    const at = log.findIndex((l) => l.type === 'resume');
    expect(log[at]).toMatchObject({ iteration: 8, iterations: 24, dropped: 2 });
    expect(log.slice(0, at).every((l) => l.iteration <= 8)).toBe(true);
    expect(log[at + 1]).toMatchObject({ type: 'eval', iteration: 8 });
    // Numbers as logged: loss to 6 significant digits, percentages to 4 decimals, images/s to 1.
    for (const l of log.filter((x) => x.type === 'train')) {
      expect(String(l.loss).replace(/^0\.0*|\./g, '').length).toBeLessThanOrEqual(6);
      expect(String(l.accuracy)).toMatch(/^\d+(\.\d{1,4})?$/);
      expect(String(l.imagesPerSecond)).toMatch(/^\d+(\.\d)?$/);
    }
    // The loss curve covers all six logged steps, not only the resumed part, and marks the resume.
    const html = readFileSync(join(crashed, 'curves.html'), 'utf8');
    expect(html.match(/<polyline[^>]*points="([^"]*)"/)![1].split(' ')).toHaveLength(6);
    expect(html).toContain('resumed at 8');
    // The checkpoint states the test error of its weights, as the model does.
    const weights = readCheckpointInfo(join(crashed, 'checkpoint.safetensors')).weights;
    expect(weights).toMatch(/^trained: .* 24 iterations, batch 32, test top-1 error \d+\.\d\d%$/);
    expect(metadataOf(join(crashed, 'model.onnx')).weights).toBe(weights);
    expect(readdirSync(crashed).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  }, 180_000);

  it('a finished run is extended only with its milestones given, and the messages say so (item 5)', async () => {
    const done = await runCli('train', '--resume', crashed);
    expect(done.code).toBe(2);
    expect(done.err).toContain(`the run is finished (24 of 24 iterations). To train it longer: resnet-onnx train --resume ${crashed} --iterations N --milestones 12,18`);
    const moved = await runCli('train', '--resume', crashed, '--iterations', '32');
    expect(moved.code).toBe(2);
    expect(moved.err).toMatch(/default milestones scale with it \(to 16,24\).*To extend it with its schedule, add --milestones 12,18$/);
    const other = await runCli('train', '--resume', crashed, '--iterations', '32', '--milestones', '16,24');
    expect(other.code).toBe(2);
    expect(other.err).toContain("--milestones 16,24 (the checkpoint's: 12,18)");
    const r = await runCli('train', '--resume', crashed, '--iterations', '32', '--milestones', '12,18', '--quiet');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/done: 8 iterations in .*24: 32 in all/);
    expect(readCheckpointInfo(join(crashed, 'checkpoint.safetensors')).run).toMatchObject({ iteration: 32, settings: { iterations: 32 } });
  }, 180_000);
});

describe('nonsensical numbers are refused with what is allowed (item 8)', () => {
  const cases: [string[], RegExp][] = [
    [['--lr', '-1'], /--lr must be a number > 0, got '-1'/],
    [['--lr', '0'], /--lr must be a number > 0/],
    [['--momentum', '1'], /--momentum must be a number in \[0, 1\)/],
    [['--momentum', '-0.1'], /--momentum must be a number in \[0, 1\)/],
    [['--weight-decay', '-0.0001'], /--weight-decay must be a number >= 0/],
    [['--gamma', '0'], /--gamma must be a number in \(0, 1\]/],
    [['--gamma', '10'], /--gamma must be a number in \(0, 1\]/],
    [['--warmup', '--warmup-lr', '0'], /--warmup-lr must be a number > 0/],
    [['--warmup-lr', '0.02'], /--warmup-lr and --warmup-iterations shape the warm-up: add --warmup/],
    [['--milestones', '20,10'], /--milestones must increase/],
    [['--batch', '0'], /--batch must be an integer >= 1/],
    [['--nesterov', '--momentum', '0'], /--nesterov needs a --momentum above 0/],
    [['--iterations', '24', '--milestones', '12,30'], /milestones must lie within the run's 24 iterations, got 12,30/],
  ];
  it.each(cases)('train %j', async (args, message) => {
    const out = join(dir, 'refused');
    const r = await runCli('train', ...FLAGS, '--out', out, ...args);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(message);
    expect(existsSync(out)).toBe(false);
  });
  it('the library refuses them too', async () => {
    await expect(train({ ...options, out: join(dir, 'lib-refused'), schedule: { ...options.schedule, lr: -1 } })).rejects.toThrow(/--lr must be a number > 0, got -1/);
    await expect(train({ ...options, out: join(dir, 'lib-refused'), sgd: { ...DEFAULT_SGD, momentum: 1.5 } })).rejects.toThrow(/--momentum must be a number in \[0, 1\)/);
  });
});

describe('small pieces', () => {
  it('the ETA never reads "1m60s"', () => {
    expect(formatDuration(119.6)).toBe('2m00s');
    expect(formatDuration(59.7)).toBe('1m00s');
    expect(formatDuration(42.2)).toBe('42s');
    expect(formatDuration(3599.6)).toBe('1h00m');
    expect(formatDuration(7625)).toBe('2h07m');
  });
  it('a log is cut back to an iteration; lines past it and a partial last line are dropped', () => {
    const text = '{"type":"train","iteration":4}\n{"type":"checkpoint","iteration":8}\n{"type":"train","iteration":12}\n{"type":"tra';
    const c = cutLog(text, 8);
    expect(c.entries.map((e) => e.iteration)).toEqual([4, 8]);
    expect(c.dropped).toBe(2);
  });
});
