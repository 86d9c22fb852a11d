// Exit statuses, for every command (README, "Exit status"): 0 done; 2 the request was wrong, every parse error
// included (a malformed value, an unknown option, a missing argument, an invalid choice); 1 a failure while doing
// it (I/O, runtime). Each command gets a parse error, a semantic bad request and, where it does I/O, a failure.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { saveWeights } from '../src/export/weights.js';
import { exitStatus, program } from '../src/cli/main.js';
import { CliError } from '../src/cli/common.js';
import { resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { writeCifar10 } from './data-writers.js';
import { runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-exit-');
const model = join(dir, 'r20.onnx');
const checkpoint = join(dir, 'r20.safetensors');
const notAModel = join(dir, 'notes.txt');
const missing = join(dir, 'missing.onnx');
/**
 * A name longer than any Linux file system allows (255 bytes): creating it fails (ENAMETOOLONG) whoever runs the
 * test, root included, and at once (Node's recursive mkdir spins forever on /proc, so that is not used).
 */
const tooLong = (ext = ''): string => join(dir, `${'x'.repeat(300)}${ext}`);
let busy: Server;
let busyPort: number;

beforeAll(async () => {
  const cfg = resolveConfig({ depth: 20 });
  exportInference(cfg, { output: model });
  saveWeights(buildResNet(cfg), checkpoint, { config: JSON.stringify(cfg) });
  writeFileSync(notAModel, 'not a model, just some text\n');
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  busyPort = (busy.address() as { port: number }).port;
}, 60_000);

afterAll(() => new Promise<void>((resolve) => busy.close(() => resolve())));

afterEach(() => vi.restoreAllMocks());

/** Runs the command line and checks its status, naming the case and what it printed when it differs. */
async function expectExit(want: 0 | 1 | 2, ...args: string[]): Promise<string> {
  const r = await runCli(...args);
  expect(r.code, `resnet-onnx ${args.join(' ')} -> ${r.code}\nstderr: ${r.err}`).toBe(want);
  return r.err;
}

describe('every command that exists is covered here', () => {
  it('the commands are the ones this file tests', () => {
    const names = program()
      .commands.map((c) => c.name())
      .sort();
    expect(names).toEqual(['eval', 'export', 'import', 'info', 'pull', 'quantize', 'reproduce', 'serve', 'train', 'triton']);
  });
});

describe('parse errors are bad requests: exit 2, never 1', () => {
  it('a malformed number, an unknown option, a value out of range, a missing argument, an invalid choice', async () => {
    expect(await expectExit(2, 'export', '--depth', 'abc')).toMatch(/--depth must be an integer >= 1, got 'abc'/);
    expect(await expectExit(2, 'export', '--depth', '20', '--no-such-flag')).toMatch(/unknown option '--no-such-flag'/);
    expect(await expectExit(2, 'export', '--classes', '0')).toMatch(/--classes must be an integer >= 2, got '0'/);
    expect(await expectExit(2, 'export', '--depth', '20', '--variant', 'foo')).toMatch(/Allowed choices are full-preact/);
    expect(await expectExit(2, 'import')).toMatch(/missing required argument 'file'/);
    expect(await expectExit(2, 'export', '--depth')).toMatch(/option '-d, --depth <n>' argument missing/);
    expect(await expectExit(2, 'no-such-command')).toMatch(/unknown command 'no-such-command'/);
    await expectExit(2); // no command: usage on stderr
  });

  it('--opset outside 13..21 is refused while parsing, for every command that takes it', async () => {
    for (const args of [['export', '--depth', '20'], ['import', checkpoint], ['pull', 'resnet200']])
      for (const opset of ['12', '23', '17.5'])
        expect(await expectExit(2, ...args, '--opset', opset, '-o', join(dir, 'never.onnx'))).toMatch(new RegExp(`--opset must be an integer from 13 to 21 .*got '${opset.replace('.', '\\.')}'`));
    expect(await expectExit(2, 'export', '--depth', '20', '--opset', '22', '-o', join(dir, 'never.onnx'))).toMatch(/--opset 22 is refused: .*CUDA .*MaxPool-22.*WebGPU .*Conv-22.*; use 13 to 21/);
  });

  it('--help and --version exit 0', async () => {
    await expectExit(0, '--version');
    await expectExit(0, '--help');
    await expectExit(0, 'export', '--help');
    await expectExit(0, 'help', 'train');
  });

  it('the mapping itself: commander errors, user errors, anything else', () => {
    expect(exitStatus(new CliError('x'))).toBe(2);
    for (const name of ['ConfigError', 'CheckpointError', 'PathError', 'ImportError', 'T7Error', 'DatasetError']) expect(exitStatus(Object.assign(new Error('x'), { name })), name).toBe(2);
    expect(exitStatus(new Error('EACCES'))).toBe(1);
    expect(exitStatus(new TypeError('a bug'))).toBe(1);
  });
});

describe('each command: parse error 2, bad request 2, failure 1', () => {
  it('export', async () => {
    await expectExit(2, 'export', '--depth', '20', '--seed', '-1');
    expect(await expectExit(2, 'export', '--depth', '7')).toMatch(/no pre-activation ResNet has depth 7/);
    expect(await expectExit(1, 'export', '--depth', '20', '-o', tooLong('.onnx'), '-q')).toMatch(/ENAMETOOLONG/);
    // A missing output folder is not created for a path the user typed: the write fails (1).
    expect(await expectExit(1, 'export', '--depth', '20', '-o', join(dir, 'no', 'such', 'folder', 'x.onnx'), '-q')).toMatch(/does not exist/);
  });

  it('info', async () => {
    await expectExit(2, 'info', '--depth', '20', '--input-size', '4');
    expect(await expectExit(2, 'info', '--depth', '50', '--stages', '3,4,6,3')).toMatch(/--depth and --stages conflict/);
    // info reads and writes no files: nothing to fail but the request.
  });

  it('import', async () => {
    await expectExit(2, 'import', checkpoint, '--no-such-flag');
    expect(await expectExit(2, 'import', notAModel, '-o', join(dir, 'i.onnx'))).toMatch(/cannot import .*notes\.txt: /);
    expect(await expectExit(2, 'import', missing, '-o', join(dir, 'i.onnx'))).toMatch(/missing\.onnx/);
    expect(await expectExit(1, 'import', checkpoint, '-o', tooLong('.onnx'), '-q')).toMatch(/ENAMETOOLONG/);
  });

  it('pull', async () => {
    await expectExit(2, 'pull', 'resnet200', '--retries', '-1');
    expect(await expectExit(2, 'pull', 'no-such-model', '-o', join(dir, 'p.onnx'))).toMatch(/unknown model 'no-such-model'/);
    // Nothing listens on a closed port: the download fails (1).
    const cache = join(dir, 'cache');
    mkdirSync(cache, { recursive: true });
    const closed = await closedPort();
    await expectExit(1, 'pull', 'resnet200', '--mirror', `http://127.0.0.1:${closed}`, '--cache-dir', cache, '--retries', '0', '--timeout-ms', '2000', '-o', join(dir, 'p.onnx'), '-q');
  }, 30_000);

  it('serve', async () => {
    await expectExit(2, 'serve', '--port', 'abc');
    expect(await expectExit(2, 'serve', '--model', missing)).toMatch(/missing\.onnx/);
    expect(await expectExit(2, 'serve', '--model', notAModel, '--port', '0', '--log-level', 'silent')).toMatch(/notes\.txt/);
    // The port is taken: the server cannot listen (1).
    expect(await expectExit(1, 'serve', '--model', model, '--port', String(busyPort), '--log-level', 'silent')).toMatch(/EADDRINUSE/);
  }, 60_000);

  it('triton', async () => {
    await expectExit(2, 'triton', '--model', model, '--max-batch', '0');
    expect(await expectExit(2, 'triton', '--model', missing, '-o', join(dir, 'repo'))).toMatch(/missing\.onnx/);
    expect(await expectExit(1, 'triton', '--model', model, '-o', tooLong())).toMatch(/ENAMETOOLONG/);
  }, 30_000);

  it('train', async () => {
    await expectExit(2, 'train', '--depth', '20', '--lr', 'abc');
    expect(await expectExit(2, 'train', '--depth', '20', '--dataset', 'cifar10')).toMatch(/--data is required for cifar10/);
    const data = join(dir, 'cifar');
    writeCifar10(data, 4);
    expect(await expectExit(1, 'train', '--depth', '20', '--dataset', 'cifar10', '--data', data, '--batch', '2', '--iterations', '1', '--out', tooLong(), '-q')).toMatch(/ENAMETOOLONG/);
  }, 60_000);

  it('eval', async () => {
    await expectExit(2, 'eval', '--model', model, '--batch', '0');
    expect(await expectExit(2, 'eval')).toMatch(/--model FILE is required/);
    // Every image of the set is unreadable: nothing could be evaluated (1).
    const images = join(dir, 'images');
    for (const c of ['airplane', 'automobile']) {
      mkdirSync(join(images, c), { recursive: true });
      writeFileSync(join(images, c, 'broken.png'), 'not a PNG');
    }
    expect(await expectExit(1, 'eval', '--model', model, '--data', images, '-q')).toMatch(/no image could be evaluated/);
  }, 60_000);

  it('quantize', async () => {
    await expectExit(2, 'quantize', model, '--calibration-images', 'abc');
    expect(await expectExit(2, 'quantize', model)).toMatch(/--calibrate DATA is required/);
    // No file of the calibration folder decodes: nothing to calibrate on (1).
    const broken = join(dir, 'calibration');
    mkdirSync(broken, { recursive: true });
    writeFileSync(join(broken, 'broken.png'), 'not a PNG');
    expect(await expectExit(1, 'quantize', model, '--calibrate', broken, '-o', join(dir, 'q.onnx'), '-q')).toMatch(/no calibration image could be read/);
  }, 60_000);
});

describe('reproduce', () => {
  it('parse error, bad request 2; a study folder that cannot be made 1', async () => {
    await expectExit(2, 'reproduce', 'table1', '--seeds', 'abc');
    expect(await expectExit(2, 'reproduce', 'table1', '--rows', 'nope', '--out', join(dir, 'study'))).toMatch(/--rows: no row 'nope' in table1/);
    expect(await expectExit(1, 'reproduce', 'table1', '--stages', '1', '--iterations', '2', '--out', tooLong(), '-q')).toMatch(/ENAMETOOLONG|name too long/i);
  }, 60_000);
});

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
