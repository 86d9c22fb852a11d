// `resnet-onnx serve` and `resnet-onnx triton` refuse bad requests before any work, with exit 2 and a message
// that names what was given and what is allowed: a --model that is not an ONNX model or is a folder, a --out
// that is a file, a model folder the repository already holds (unless --force), values Triton's config fields
// cannot hold, and the old flag names.
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { runCli, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-serve-cli-');
const model = join(dir, 'tiny.onnx');

beforeAll(() => {
  exportInference(resolveConfig({ dataset: 'cifar10', stages: [1], unit: 'basic' }), { output: model });
});

describe('--model that is not an ONNX model file', () => {
  const cases: [string, () => string, RegExp][] = [
    ['a text file (like /etc/passwd)', () => write('passwd', 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n'), /passwd is not an ONNX model: it is text, starting "root:x:0:0:root:\/root:\/bin\/bash"/],
    ['an empty file', () => write('empty.onnx', ''), /empty\.onnx is not an ONNX model: the file is empty/],
    ['a safetensors checkpoint', () => write('w.safetensors', Buffer.concat([Buffer.from([14, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":"b"}     ')])), /w\.safetensors is not an ONNX model: it is a safetensors file/],
    ['random bytes', () => write('noise.onnx', Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 2654435761) >>> 24))), /noise\.onnx is not an ONNX model: its first bytes are [0-9a-f ]+ \(/],
    ['a truncated model', () => write('cut.onnx', readFileSync(model).subarray(0, 5000)), /cut\.onnx is truncated or not an ONNX model/],
    ['a folder', () => dir, /--model .* is a folder; give a file/],
    ['a missing file', () => join(dir, 'nope.onnx'), /--model .*nope\.onnx: no such file/],
  ];

  function write(name: string, content: string | Buffer): string {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  }

  it.each(cases)('serve: %s -> exit 2, names the file and what it is', async (_name, path, message) => {
    const r = await runCli('serve', '--model', path(), '--port', '0', '--log-level', 'silent');
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.err).not.toMatch(/wire type/);
  });

  it.each(cases)('triton: %s -> exit 2, nothing written', async (_name, path, message) => {
    const out = join(dir, `repo-${Math.random().toString(36).slice(2)}`);
    const r = await runCli('triton', '--model', path(), '--out', out);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(message);
    expect(existsSync(out)).toBe(false);
  });
});

describe('serve: flags out of range', () => {
  it.each([
    [['--max-batch', '1000'], /maxBatch \(--max-batch\) must be an integer from 1 to 256, got 1000/],
    [['--max-delay-ms', '20000'], /maxDelayMs \(--max-delay-ms\) must be an integer from 0 to 10000/],
    [['--workers', '100'], /workers \(--workers\) must be an integer from 1 to 64/],
  ])('%j -> exit 2, before the model is loaded', async (flags, message) => {
    const r = await runCli('serve', '--model', model, '--port', '0', '--log-level', 'silent', ...flags);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(message);
  });
});

describe('triton: the repository', () => {
  it('--out that is a file is refused before any work', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'keep me');
    const r = await runCli('triton', '--model', model, '--out', file);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--out .*a-file is a file; give the repository folder/);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('an existing model folder is not overwritten without --force; with --force it is replaced', async () => {
    const repo = join(dir, 'repo');
    expect((await runCli('triton', '--model', model, '--out', repo, '--max-batch', '4')).code).toBe(0);
    const config = join(repo, 'tiny', 'config.pbtxt');
    const before = readFileSync(config, 'utf8');
    expect(before).toMatch(/max_batch_size: 4\n/);
    const refused = await runCli('triton', '--model', model, '--out', repo, '--max-batch', '8');
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/the repository already holds model 'tiny' \(.*tiny\); pass --force to replace it/);
    expect(readFileSync(config, 'utf8')).toBe(before);
    const forced = await runCli('triton', '--model', model, '--out', repo, '--max-batch', '8', '--force');
    expect(forced.code, forced.err).toBe(0);
    expect(readFileSync(config, 'utf8')).toMatch(/max_batch_size: 8\n/);
    expect(statSync(join(repo, 'tiny', '1', 'model.onnx')).size).toBe(statSync(model).size);
    // Another model goes beside it without --force.
    const other = join(dir, 'other.onnx');
    writeFileSync(other, readFileSync(model));
    expect((await runCli('triton', '--model', other, '--out', repo)).code).toBe(0);
    expect(existsSync(join(repo, 'other', 'config.pbtxt'))).toBe(true);
  });

  it('a missing parent folder of --out is an I/O failure (exit 1), not created', async () => {
    const r = await runCli('triton', '--model', model, '--out', join(dir, 'no', 'such', 'repo'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/folder .*no[/\\]such does not exist/);
  });
});

describe('triton: values the config fields cannot hold are refused (exit 2, field and range named)', () => {
  const cases: [string[], RegExp][] = [
    [['--max-batch', '2147483648'], /--max-batch 2147483648: max_batch_size is an int32 field; give 1 to 2147483647/],
    [['--max-batch', '0'], /max_batch_size .*1 to 2147483647/],
    [['--instances', '2147483648'], /--instances 2147483648: instance_group count is an int32 field; give 1 to 2147483647/],
    [['--max-queue', '4294967296'], /--max-queue 4294967296: max_queue_size is a uint32 field; give 1 to 4294967295/],
    [['--max-queue', '-1'], /max_queue_size .*1 to 4294967295/],
    [['--max-delay-ms', '18446744073709552'], /--max-delay-ms 18446744073709552: max_queue_delay_microseconds \(uint64, microseconds\) must be from 0 to 18446744073709551615 us/],
    [['--deadline-ms', '0'], /--deadline-ms 0: default_timeout_microseconds \(uint64, microseconds\) must be from 1 to/],
    [['--max-delay-ms', '0.0005'], /--max-delay-ms 0.0005: max_queue_delay_microseconds holds whole microseconds; give at most 3 decimals/],
    [['--max-delay-ms', 'soon'], /--max-delay-ms must be a number of milliseconds/],
    [['--max-delay-us', '5000'], /--max-delay-us is now --max-delay-ms \(milliseconds, as `serve` takes them: 5000 us is --max-delay-ms 5\)/],
    [['--timeout-ms', '100'], /--timeout-ms is now --deadline-ms/],
    [['--output', 'x'], /--output is now -o\/--out/],
  ];
  it.each(cases)('%j', async (flags, message) => {
    const out = join(dir, `range-${Math.random().toString(36).slice(2)}`);
    mkdirSync(out);
    const r = await runCli('triton', '--model', model, '--out', out, ...flags);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(message);
    expect(existsSync(join(out, 'tiny'))).toBe(false);
  });
});

describe('--help', () => {
  it('serve says it serves any model this project wrote, not only ImageNet', async () => {
    const { Command } = await import('commander');
    const { serveCommand } = await import('../src/cli/serve.js');
    const prog = new Command('resnet-onnx');
    serveCommand(prog);
    const help = prog.commands.find((c) => c.name() === 'serve')?.helpInformation() ?? '';
    expect(help).toMatch(/any model this project wrote/);
    expect(help).not.toMatch(/serve ImageNet classification/);
    const triton = prog.commands.find((c) => c.name() === 'triton')?.helpInformation() ?? '';
    expect(triton).toMatch(/-o, --out <dir>/);
    expect(triton).toMatch(/--max-delay-ms/);
    expect(triton).toMatch(/--deadline-ms/);
    expect(triton).not.toMatch(/--max-delay-us|--timeout-ms/);
  });
});
