// Training steps run for real on WebGPU (issue 13): the files of `export --training` driven by onnxruntime-web's
// WebGPU backend in Debian's Chromium (a software adapter, SwiftShader, exposed by --enable-unsafe-webgpu), every
// node placed on WebGPU per the session's verbose log, and two steps equal to onnxruntime-node's CPU steps.
import { existsSync, readFileSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NEXT_SUFFIX, trainingStatePath } from '../src/export/training.js';
import { relDiff, runCli, seededInput, stateFeeds, tempDir } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const ORT_WEB = join(resolve(import.meta.dirname, '..'), 'node_modules', 'onnxruntime-web', 'dist');
const dir = tempDir('resnet-onnx-webgpu-');
const model = join(dir, 'step.onnx');
// ResNet-8 (CIFAR, basic units, one per stage): every op type of ResNet-20's step at a third of its nodes, because
// SwiftShader compiles each WebGPU shader on the CPU (about 25 s of the first step on 2 cores).
const NET = ['--dataset', 'cifar10', '--unit', 'basic', '--stages', '1,1,1'];
const BATCH = 2;
const SIZE = 32;
const CLASSES = 10;
const LRS = [0.1, 0.05];
// float32 on another device: convolutions and reductions sum in another order, so values differ by rounding
// (seen: 2e-7 of the tensor's scale after two steps). 1e-4 leaves room for that and still catches a wrong kernel,
// whose errors are of the order of the gradients themselves (a bottleneck net's step 2 was off by 2e-3 here).
const TOL = 1e-4;
const batches = LRS.map((_, k) => ({
  x: seededInput(BATCH * 3 * SIZE * SIZE, 40 + k),
  labels: BigInt64Array.from({ length: BATCH }, (_, i) => BigInt((3 * i + 7 * k + 1) % CLASSES)),
}));

interface Steps {
  losses: number[];
  correct: number[];
  /** Every state tensor X after the last step (its last `X#next`). */
  state: Map<string, Float32Array>;
}

/** The reference: the same files and batches in onnxruntime-node on the CPU (as test/training-export.test.ts). */
async function cpuSteps(): Promise<Steps> {
  const { feeds, names } = stateFeeds(trainingStatePath(model));
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  const losses: number[] = [];
  const correct: number[] = [];
  try {
    for (const [k, b] of batches.entries()) {
      feeds.input = new ort.Tensor('float32', b.x, [BATCH, 3, SIZE, SIZE]);
      feeds.labels = new ort.Tensor('int64', b.labels, [BATCH]);
      feeds.lr = new ort.Tensor('float32', Float32Array.of(LRS[k]), []);
      const out = await session.run(feeds);
      losses.push((out.loss.data as Float32Array)[0]);
      correct.push((out.correct.data as Float32Array)[0]);
      for (const name of names) feeds[name] = out[`${name}${NEXT_SUFFIX}`];
    }
    return { losses, correct, state: new Map(names.map((n) => [n, feeds[n].data as Float32Array])) };
  } finally {
    await session.release();
  }
}

// The page: the same loop in onnxruntime-web's WebGPU bundle. onnxruntime's log goes to the console; the page keeps
// it (not sent line by line to the test: one line per GPU program and step would slow the run down).
const PAGE = `<!doctype html><meta charset="utf-8"><title>training steps on WebGPU</title><script type="module">
window.runSteps = async (batch, size, lrs) => {
  const log = [];
  for (const level of ['log', 'info', 'warn', 'error', 'debug']) console[level] = (...a) => log.push(a.join(' '));
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return { noAdapter: navigator.gpu ? 'navigator.gpu.requestAdapter() gave no adapter' : 'navigator.gpu is undefined' };
  const ort = await import('/ort/ort.webgpu.min.mjs');
  ort.env.wasm.wasmPaths = '/ort/';
  ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page; one is enough for the CPU side here
  const bytes = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
  const st = await bytes('/files/step.state.safetensors');
  const headerLength = Number(new DataView(st.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + headerLength)));
  const names = Object.keys(header).filter((n) => n !== '__metadata__');
  const feeds = {};
  for (const n of names) {
    const [a, b] = header[n].data_offsets;
    feeds[n] = new ort.Tensor('float32', new Float32Array(st.slice(8 + headerLength + a, 8 + headerLength + b).buffer), header[n].shape);
  }
  const xs = new Float32Array((await bytes('/files/x.bin')).buffer);
  const ls = new BigInt64Array((await bytes('/files/labels.bin')).buffer);
  // Severity 0 (verbose) makes the session log where each node was placed (VerifyEachNodeIsAssignedToAnEp).
  const session = await ort.InferenceSession.create('/files/step.onnx', { executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 });
  const losses = [], correct = [];
  const per = batch * 3 * size * size;
  for (let k = 0; k < lrs.length; k++) {
    feeds.input = new ort.Tensor('float32', xs.slice(k * per, (k + 1) * per), [batch, 3, size, size]);
    feeds.labels = new ort.Tensor('int64', ls.slice(k * batch, (k + 1) * batch), [batch]);
    feeds.lr = new ort.Tensor('float32', Float32Array.of(lrs[k]), []);
    const out = await session.run(feeds);
    losses.push(out.loss.data[0]);
    correct.push(out.correct.data[0]);
    for (const n of names) feeds[n] = out[n + '#next'];
  }
  await session.release();
  const b64 = (f) => { let s = ''; const u = new Uint8Array(f.buffer, f.byteOffset, f.byteLength); for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000)); return btoa(s); };
  const state = {};
  for (const n of names) state[n] = b64(feeds[n].data);
  return { losses, correct, state, adapter: adapter.info?.architecture ?? '', log: log.filter((l) => !/Starting program/.test(l)) };
};
window.ready = true;
</script>`;

interface PageResult {
  noAdapter?: string;
  losses: number[];
  correct: number[];
  state: Record<string, string>;
  adapter: string;
  log: string[];
}

let server: Server | undefined;
let browser: Browser | undefined;
let skip: string | undefined;
let web: PageResult;
let cpu: Steps;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    skip = `${CHROMIUM} is missing (apt-get install chromium; .ci/run does it)`;
    return;
  }
  const r = await runCli('export', '--training', ...NET, '--batch', String(BATCH), '--seed', '5', '-o', model, '-q');
  expect(r.code, r.err).toBe(0);
  const x = new Float32Array(batches.length * BATCH * 3 * SIZE * SIZE);
  const labels = new BigInt64Array(batches.length * BATCH);
  batches.forEach((b, k) => {
    x.set(b.x, k * b.x.length);
    labels.set(b.labels, k * BATCH);
  });
  const files: Record<string, Buffer> = {
    'step.onnx': readFileSync(model),
    'step.state.safetensors': readFileSync(trainingStatePath(model)),
    'x.bin': Buffer.from(x.buffer),
    'labels.bin': Buffer.from(labels.buffer),
  };
  server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (type: string, body: Buffer | string): void => void res.writeHead(200, { 'Content-Type': type }).end(body);
    if (path === '/') return send('text/html', PAGE);
    if (path.startsWith('/files/') && files[path.slice(7)]) return send('application/octet-stream', files[path.slice(7)]);
    const name = path.slice(5);
    if (path.startsWith('/ort/') && /^[\w.-]+$/.test(name) && existsSync(join(ORT_WEB, name))) {
      return send(name.endsWith('.wasm') ? 'application/wasm' : 'text/javascript', readFileSync(join(ORT_WEB, name)));
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((res) => server!.listen(0, '127.0.0.1', res));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
  type Run = (batch: number, size: number, lrs: number[]) => Promise<PageResult>;
  web = await page.evaluate(([b, s, l]) => (window as unknown as { runSteps: Run }).runSteps(b, s, l), [BATCH, SIZE, LRS] as [number, number, number[]]);
  expect(errors, 'errors in the page').toEqual([]);
  if (web.noAdapter) {
    skip = `Chromium (${CHROMIUM} --enable-unsafe-webgpu) exposes no WebGPU adapter: ${web.noAdapter}`;
    return;
  }
  cpu = await cpuSteps();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  if (server) await new Promise((res) => server!.close(res));
});

describe('training steps on WebGPU: onnxruntime-web in Chromium (issue 13)', () => {
  it('every node of the step graph is placed on WebGPU (the int64 Equal of `correct` was on the CPU)', (ctx) => {
    if (skip) return ctx.skip(skip);
    expect(web.adapter, 'the adapter Chromium gave').toBe('swiftshader');
    // onnxruntime lists the placement after partitioning: one line when a single provider took every node,
    // otherwise a line per provider followed by its nodes (`  Equal (metrics.equal)`).
    const i = web.log.findIndex((l) => l.includes('VerifyEachNodeIsAssignedToAnEp'));
    expect(i, 'no placement in the session log').toBeGreaterThanOrEqual(0);
    const placement = web.log.slice(i).filter((l) => l.includes('VerifyEachNodeIsAssignedToAnEp')).map((l) => l.replace(/^.*VerifyEachNodeIsAssignedToAnEp\]/, ''));
    const elsewhere: string[] = [];
    let provider = '';
    for (const l of placement) {
      provider = /placed on \[(\w+)\]/.exec(l)?.[1] ?? provider;
      if (provider && provider !== 'WebGpuExecutionProvider') elsewhere.push(l.trim());
    }
    expect(elsewhere, 'nodes not placed on WebGPU').toEqual([]);
    expect(placement.join('\n'), 'placement').toMatch(/^ *All nodes placed on \[WebGpuExecutionProvider\]\. Number of nodes: [1-9]\d*$/m);
    expect(web.log.filter((l) => /\[[WE]:onnxruntime/.test(l)), 'warnings and errors of onnxruntime').toEqual([]);
  });

  it('two steps equal the CPU steps of onnxruntime-node from the same files: loss, correct and every X#next', (ctx) => {
    if (skip) return ctx.skip(skip);
    expect(web.correct).toEqual(cpu.correct);
    for (let k = 0; k < LRS.length; k++) expect(Math.abs(web.losses[k] - cpu.losses[k]), `loss of step ${k + 1}: ${web.losses[k]} vs ${cpu.losses[k]}`).toBeLessThanOrEqual(TOL * Math.max(1, Math.abs(cpu.losses[k])));
    expect(Object.keys(web.state).sort()).toEqual([...cpu.state.keys()].sort());
    let worst = { name: '', rel: 0 };
    for (const [name, want] of cpu.state) {
      const b = Buffer.from(web.state[name], 'base64');
      const got = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
      const rel = relDiff(got, want);
      if (!(rel <= worst.rel) && !Number.isNaN(worst.rel)) worst = { name, rel };
    }
    expect(worst.rel, `${worst.name} after ${LRS.length} steps differs by ${worst.rel.toExponential(2)} (relative to its scale)`).toBeLessThanOrEqual(TOL);
    // The second step moved on from the first (its state was fed back).
    expect(web.losses[1]).not.toBe(web.losses[0]);
  });
});
