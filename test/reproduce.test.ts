// `reproduce` (issue 11): the study runner on a tiny net and a few iterations: rows run in their own folders, a
// finished row is not rerun, a stopped one resumes to the same result as an unbroken run, `--rows` picks rows and
// the results accumulate, other settings are refused, and the table and page say what the folders hold. The long
// study itself is a bench-scale run (models/reproduce-table1/), not a test.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TABLE1, TABLE2 } from '../src/reproduce/tables.js';
import { type StudyEvent, type StudyResults, type StudySettings, StudyError, collectResults, median, runStudy } from '../src/reproduce/study.js';
import { buildResNet } from '../src/models/preact.js';
import { resolveConfig } from '../src/models/config.js';
import { DEBIAN_FASHION_MNIST } from '../src/train/datasets.js';
import { runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-reproduce-');
// A CIFAR-family net with one basic unit per stage (ResNet-8) on 64 training and 32 test images.
const SETTINGS: StudySettings = {
  table: 'table1',
  dataset: 'fashion-mnist',
  data: DEBIAN_FASHION_MNIST,
  depth: null,
  stages: [1],
  iterations: 4,
  batch: 16,
  lr: 0.1,
  milestones: [2, 3],
  gamma: 0.1,
  warmup: null,
  evalEvery: 2,
  logEvery: 1,
  trainLimit: 64,
  testLimit: 32,
};
const rows = (...ids: string[]) => TABLE1.rows.filter((r) => ids.includes(r.id));
const study = (out: string, ids: string[], extra: { seeds?: number[]; settings?: Partial<StudySettings>; onEvent?: (e: StudyEvent) => void } = {}): Promise<StudyResults> =>
  runStudy({ out, table: TABLE1, settings: { ...SETTINGS, ...extra.settings }, rows: rows(...ids), seeds: extra.seeds ?? [0], threads: 2, command: `test study ${out}`, onEvent: extra.onEvent });
const FLAGS = ['--stages', '1', '--iterations', '4', '--batch', '16', '--train-limit', '64', '--test-limit', '32', '--eval-every', '2', '--log-every', '1', '--threads', '2', '--quiet'];

describe('reproduce: the study runner', () => {
  it('trains each row in its own folder, does not rerun a finished one, and a stopped one resumes to the same result', async () => {
    const out = join(dir, 'a');
    const events: StudyEvent[] = [];
    const first = await study(out, ['original', 'scaling-0'], { onEvent: (e) => events.push(e) });
    expect(events.filter((e) => e.type === 'start').map((e) => e.run.row.id)).toEqual(['original', 'scaling-0']);
    // Progress names the row, its place in the study, and ETAs once a pace is known.
    const trainEvents = events.filter((e): e is Extract<StudyEvent, { type: 'train' }> => e.type === 'train');
    expect(trainEvents.at(-1)).toMatchObject({ index: 2, runs: 2 });
    expect(trainEvents.every((e) => e.rowEta !== null && e.totalEta !== null)).toBe(true);
    for (const id of ['original', 'scaling-0']) expect(existsSync(join(out, id, 'seed0', 'checkpoint.safetensors'))).toBe(true);
    const r0 = first.rows.find((r) => r.id === 'original')!;
    expect(r0.runs[0]).toMatchObject({ state: 'done', iteration: 4, testIteration: 4 });
    expect(r0.median!.testError).toBeGreaterThanOrEqual(0);

    // Rerun: nothing trains, nothing is rewritten in the run folders.
    const ck = join(out, 'original', 'seed0', 'checkpoint.safetensors');
    const before = statSync(ck).mtimeMs;
    const again: StudyEvent[] = [];
    const second = await study(out, ['original', 'scaling-0'], { onEvent: (e) => again.push(e) });
    expect(again.map((e) => e.type)).toEqual(['skip', 'skip']);
    expect(statSync(ck).mtimeMs).toBe(before);
    expect(second.rows.map((r) => r.median)).toEqual(first.rows.map((r) => r.median));

    // A run stopped after its checkpoint at iteration 2 (here: an error thrown from the progress callback at 3).
    const cut = join(dir, 'cut');
    await expect(
      study(cut, ['original'], {
        onEvent: (e) => {
          if (e.type === 'train' && e.event.iteration === 3) throw new Error('stopped');
        },
      }),
    ).rejects.toThrow('stopped');
    const resumed: StudyEvent[] = [];
    const r = await study(cut, ['original'], { onEvent: (e) => resumed.push(e) });
    expect(resumed[0]).toMatchObject({ type: 'start', state: 'partial', from: 2 });
    const row = r.rows.find((x) => x.id === 'original')!;
    // Same data order and weights: the resumed row ends where the unbroken one did.
    expect(row.median).toEqual(r0.median);
    expect(row.runs[0].lossCurve.map(([i]) => i)).toEqual([1, 2, 3, 4]);
  }, 600_000);

  it('accumulates rows across runs, medians over seeds with the spread, and writes the table and the page', async () => {
    const out = join(dir, 'b');
    await study(out, ['original'], { seeds: [0, 1, 2] });
    const r = await study(out, ['dropout']);
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as StudyResults;
    // The command is at the top of both.
    expect(md.split('\n')[2]).toBe(`Reproduce: \`test study ${out}\``);
    expect(html).toContain(`<code>test study ${out}</code>`);
    // Every row of the table is listed, with the paper's figure; rows not run say so.
    for (const row of TABLE1.rows) expect(md).toContain(`| ${row.label} |`);
    expect(md).toMatch(/\| original \(identity shortcut\) \| 6\.61 \| [\d.]+ \([\d.]+-[\d.]+\) \|/);
    expect(md).toMatch(/\| constant scaling: shortcut x0\.5, F x1 \| fail \| - \| - \| - \| - \| - \| not run \|/);
    expect(md).toMatch(/\| original \(identity shortcut\) \| 6\.61 \| [\d.]+ \([\d.]+-[\d.]+\) \| \+0\.00 \|/);
    const orig = json.rows.find((x) => x.id === 'original')!;
    expect(orig.runs.map((x) => x.seed)).toEqual([0, 1, 2]);
    const errors = orig.runs.map((x) => x.testError!);
    expect(orig.median!.testError).toBe(median(errors));
    expect(orig.spread!.testError).toEqual([Math.min(...errors), Math.max(...errors)]);
    expect(r.rows.find((x) => x.id === 'dropout')!.runs).toHaveLength(1);
    // Fig. 3 style: two panels (loss on a log scale, test error), one line per row run, a legend entry each.
    expect(html.match(/<svg /g)).toHaveLength(2);
    expect(html.match(/<polyline /g)).toHaveLength(4);
    expect(html).toContain('dropout 0.5 on the shortcut');
    expect(html).toContain('loss (log)');
    // What the numbers show is stated, each as holding or not.
    expect(json.checks.length).toBeGreaterThanOrEqual(3);
    expect(md).toContain('What the numbers show:');
    // Each row alone, as a train command that parses.
    expect(orig.trainCommand).toContain('resnet-onnx train --dataset fashion-mnist --stages 1 --unit basic --variant original');
    // collectResults reads the same from the folder.
    expect(collectResults(out, TABLE1, SETTINGS, `test study ${out}`).rows.map((x) => x.median)).toEqual(json.rows.map((x) => x.median));
  }, 600_000);

  it('records a row whose loss diverges as a fail and does not rerun it', async () => {
    const out = join(dir, 'c');
    const events: StudyEvent[] = [];
    const r = await study(out, ['scaling-0.5'], { settings: { lr: 1e30 }, onEvent: (e) => events.push(e) });
    expect(events.some((e) => e.type === 'diverged')).toBe(true);
    const row = r.rows.find((x) => x.id === 'scaling-0.5')!;
    expect(row.runs[0].state).toBe('diverged');
    expect(row.fails).toBe(true);
    expect(readFileSync(join(out, 'results.md'), 'utf8')).toMatch(/diverged \(loss not finite\) at iteration \d/);
    const again: StudyEvent[] = [];
    await study(out, ['scaling-0.5'], { settings: { lr: 1e30 }, onEvent: (e) => again.push(e) });
    expect(again).toMatchObject([{ type: 'skip', state: 'diverged' }]);
  }, 600_000);

  it('refuses a study folder made with other settings, naming each difference', async () => {
    const out = join(dir, 'a');
    await expect(study(out, ['original'], { settings: { iterations: 6, milestones: [3, 4] } })).rejects.toThrow(StudyError);
    await expect(study(out, ['original'], { settings: { iterations: 6, milestones: [3, 4] } })).rejects.toThrow(/--iterations 4 \(the study's\) against 6 \(this command's\); --milestones \[2,3\] \(the study's\) against \[3,4\]/);
  });
});

describe('reproduce: the command', () => {
  it('runs the rows --rows names, continues a study from --out alone, and refuses bad input with exit 2', async () => {
    const out = join(dir, 'cli');
    const run = await runCli('reproduce', 'table1', '--rows', 'shortcut-gating-6', '--out', out, ...FLAGS);
    expect(run.code, run.err).toBe(0);
    expect(run.out).toContain('reproduce: npx resnet-onnx reproduce table1 --dataset fashion-mnist --stages 1 --iterations 4');
    expect(run.out).toMatch(/results: 1 of 11 rows finished/);
    // The paper's recipe cut at the study's length: its 400-iteration warm-up at 0.01 covers these 4 iterations.
    expect(run.out).toContain('--lr 0.1 --milestones none --warmup-iterations 400');
    expect(readFileSync(join(out, 'results.md'), 'utf8')).toContain("lr 0.01 throughout (the paper's warm-up rate");
    expect(existsSync(join(out, 'shortcut-gating-6', 'seed0', 'log.jsonl'))).toBe(true);
    expect(existsSync(join(out, 'original'))).toBe(false);
    // --out alone: the study's own settings; the finished row is not rerun.
    const again = await runCli('reproduce', 'table1', '--rows', 'shortcut-gating-6', '--out', out, '--quiet');
    expect(again.code, again.err).toBe(0);
    expect(again.out).toContain('--stages 1 --iterations 4');

    const bad = async (args: string[], message: RegExp): Promise<void> => {
      const r = await runCli('reproduce', ...args);
      expect(r.code, `${args.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err).toMatch(message);
    };
    await bad(['table1', '--rows', 'identity,dropout', '--out', join(dir, 'x')], /--rows: no row 'identity' in table1 \(its rows: original, scaling-0, .*dropout\)/);
    await bad(['table9'], /unknown study 'table9' \(allowed: table1, table2\)/);
    await bad(['table1', '--depth', '56', '--out', join(dir, 'x')], /--depth 56: the paper's table1 reports ResNet-110; give 110/);
    await bad(['table1', '--iterations', '0'], /--iterations must be an integer >= 1/);
    await bad(['table1', '--out', out, '--iterations', '8'], /holds a study made with other settings: --iterations 4 \(the study's\) against 8/);
    await bad(['table2', '--out', out], /holds a table1 study, not table2/);
    await bad(['table1', '--milestones', '300,500', '--iterations', '400', '--out', join(dir, 'x')], /--milestones 300,500 must fall within the 400 iterations/);
  }, 600_000);
});

describe('reproduce: the tables', () => {
  it("lists Table 1's eleven rows on the original unit and Table 2's five placements with the paper's figures", () => {
    expect(TABLE1.rows.map((r) => r.paper[110])).toEqual([6.61, 'fail', 'fail', 12.35, 'fail', 8.7, 9.81, 12.86, 6.91, 12.22, 'fail']);
    expect(TABLE1.activation).toBe('original');
    expect(TABLE2.rows.map((r) => [r.activation, r.paper[110], r.paper[164]])).toEqual([
      ['original', 6.61, 5.93],
      ['bn-after-add', 8.17, 6.5],
      ['relu-before-add', 7.84, 6.14],
      ['relu-only-preact', 6.71, 5.91],
      ['full-preact', 6.37, 5.46],
    ]);
  });

  it('builds constant scaling by 0 as a plain net: no shortcut on the units that keep their shape', () => {
    const plain = buildResNet(resolveConfig({ dataset: 'fashion-mnist', depth: 20, activation: 'original', shortcut: { kind: 'scaling', scale: 0 } }));
    const half = buildResNet(resolveConfig({ dataset: 'fashion-mnist', depth: 20, activation: 'original', shortcut: { kind: 'scaling', scale: 0.5 } }));
    const adds = (g: typeof plain): number => g.nodes.filter((n) => n.op === 'Add').length;
    // ResNet-20: 9 units, 2 of them change shape (their zero-padded shortcut stays).
    expect(half.nodes.filter((n) => n.name.includes('scale_shortcut'))).toHaveLength(7);
    expect(plain.nodes.filter((n) => n.name.includes('scale_shortcut'))).toHaveLength(0);
    expect(adds(half) - adds(plain)).toBe(7);
    expect(() => resolveConfig({ dataset: 'fashion-mnist', depth: 20, shortcut: { kind: 'scaling', scale: -0.1 } })).toThrow(/--scale must be in \[0, 1\]/);
  });
});
