// The GPU benchmark (run by bench/gpu.sh): ResNet-110 training steps on onnxruntime's GPU providers against the
// CPU step, for equality and speed, and ResNet-200 inference latency at the paper's 320 crop; every figure against
// a CPU baseline measured in the same run. Prints rows for BENCHMARKS.md and writes --json.
// Usage: npx tsx bench/gpu.ts [--eps cuda,webgpu] [--depth 110] [--batch 128] [--steps 3] [--timed 10]
//                              [--infer-depth 200] [--size 320] [--runs 20] [--threads N] [--json FILE]
// `--eps cpu` runs everything with the CPU as the device too (a dry run of the script on any machine). Exits 1 after
// the report when a provider asked for could not start.

import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { foldBatchNorms } from '../src/export/fold.js';
import { encodeOnnx } from '../src/export/onnx.js';
import { NEXT_SUFFIX, buildTrainingStep } from '../src/export/training.js';
import type { BuildTarget } from '../src/graph/builder.js';
import { rng } from '../src/graph/init.js';
import { describe, resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { type ExecutionProvider, ProviderError, createProviderSession, describePlacement, isExecutionProvider } from '../src/util/providers.js';

const { values } = parseArgs({
  options: {
    eps: { type: 'string', default: 'cuda,webgpu' },
    depth: { type: 'string', default: '110' },
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '3' },
    timed: { type: 'string', default: '10' },
    'infer-depth': { type: 'string', default: '200' },
    size: { type: 'string', default: '320' },
    runs: { type: 'string', default: '20' },
    threads: { type: 'string', default: String(availableParallelism()) },
    json: { type: 'string', default: 'bench/out/gpu.json' },
  },
});
const eps = values.eps.split(',').map((e) => e.trim());
for (const e of eps) if (!isExecutionProvider(e)) throw new Error(`--eps: '${e}' is not one of cpu, cuda, webgpu`);
const [depth, batch, steps, timed, inferDepth, size, runs, threads] = [values.depth, values.batch, values.steps, values.timed, values['infer-depth'], values.size, values.runs, values.threads].map(Number);
const cpuOptions: ort.InferenceSession.SessionOptions = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
const median = (a: readonly number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const ms = (s: number): string => `${(1000 * s).toFixed(1)} ms`;
const log = (m: string): void => void process.stderr.write(`${m}\n`);

/** max |a - b| / max |b| over a tensor. */
function rel(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / Math.max(s, 1e-30);
}

// ---- training steps --------------------------------------------------------------------------------------------
const cfg = resolveConfig({ depth });
const shape = [batch, cfg.inChannels, 32, 32];
const batches = Array.from({ length: steps + timed }, (_, k) => {
  const u = rng(k, 'bench-gpu');
  return {
    x: new ort.Tensor('float32', Float32Array.from({ length: shape.reduce((a, d) => a * d, 1) }, () => 2 * u() - 1), shape),
    labels: new ort.Tensor('int64', BigInt64Array.from({ length: batch }, (_, i) => BigInt((i * 7 + k) % cfg.classes)), [batch]),
  };
});

interface StepRun {
  losses: number[];
  state: Map<string, Float32Array>;
  stepSeconds: number;
  placement?: string;
}

/** `steps` steps from the initial state (the equality run), then `timed` more steps timed, on `session`. */
async function runSteps(session: ort.InferenceSession, target: BuildTarget, placement?: () => string): Promise<StepRun> {
  const { state } = buildTrainingStep(cfg, { batch, size: 32, target });
  const feeds: Record<string, ort.Tensor> = { lr: new ort.Tensor('float32', Float32Array.of(0.1), []) };
  for (const s of state) feeds[s.name] = new ort.Tensor('float32', s.data.values() as Float32Array, [...s.data.dims]);
  let where: string | undefined;
  if (placement) {
    // One profiled step on zeros, outputs dropped: where onnxruntime ran each node (and the warm-up).
    await session.run({ ...feeds, input: new ort.Tensor('float32', new Float32Array(batches[0].x.size), shape), labels: batches[0].labels });
    where = placement();
  } else await session.run({ ...feeds, input: batches[0].x, labels: batches[0].labels }); // warm-up, outputs dropped
  const losses: number[] = [];
  const times: number[] = [];
  let snapshot = new Map<string, Float32Array>();
  for (let k = 0; k < steps + timed; k++) {
    const t = performance.now();
    const out = await session.run({ ...feeds, input: batches[k].x, labels: batches[k].labels });
    if (k >= steps) times.push((performance.now() - t) / 1000);
    losses.push((out.loss.data as Float32Array)[0]);
    for (const s of state) feeds[s.name] = out[`${s.name}${NEXT_SUFFIX}`];
    if (k === steps - 1) snapshot = new Map(state.map((s) => [s.name, (feeds[s.name].data as Float32Array).slice()]));
  }
  return { losses: losses.slice(0, steps), state: snapshot, stepSeconds: times.length ? median(times) : NaN, ...(where ? { placement: where } : {}) };
}

type Row = Record<string, string | number | null>;
const training: Row[] = [];
const inference: Row[] = [];
const notes: string[] = [];

log(`${describe(cfg)}: training step, batch ${batch}, 32x32; ${steps} steps compared, ${timed} timed; CPU with ${threads} threads`);
const trainerCpu = await ort.InferenceSession.create(encodeOnnx(buildTrainingStep(cfg, { batch, size: 32, target: 'onnxruntime-cpu' }).graph), cpuOptions);
const cpuStep = await runSteps(trainerCpu, 'onnxruntime-cpu');
await trainerCpu.release();
training.push({ where: "CPU, the graph `train --ep cpu` runs (baseline)", s_per_step: cpuStep.stepSeconds, images_per_s: batch / cpuStep.stepSeconds, speed: 1, max_rel_diff: null });
log(`  CPU (onnxruntime-cpu graph): ${ms(cpuStep.stepSeconds)} / step`);
const anyGraph = encodeOnnx(buildTrainingStep(cfg, { batch, size: 32, target: 'any' }).graph);
const cpuAnySession = await ort.InferenceSession.create(anyGraph, cpuOptions);
const reference = await runSteps(cpuAnySession, 'any');
await cpuAnySession.release();
training.push({ where: 'CPU, the portable graph GPUs run (equality reference)', s_per_step: reference.stepSeconds, images_per_s: batch / reference.stepSeconds, speed: cpuStep.stepSeconds / reference.stepSeconds, max_rel_diff: 0 });
log(`  CPU (portable graph): ${ms(reference.stepSeconds)} / step`);

for (const ep of eps as ExecutionProvider[]) {
  let ps;
  try {
    ps = await createProviderSession(anyGraph, ep, ep === 'cpu' ? cpuOptions : { graphOptimizationLevel: 'all' }, ep !== 'cpu');
  } catch (e) {
    if (!(e instanceof ProviderError)) throw e;
    training.push({ where: `${ep}: refused`, s_per_step: null, images_per_s: null, speed: null, max_rel_diff: null });
    notes.push(e.message);
    log(`  ${ep}: ${e.message}`);
    continue;
  }
  const place = ps.placement;
  const run = await runSteps(ps.session, 'any', place ? () => describePlacement(place(), ep) : undefined);
  await ps.session.release();
  let worst = { name: '', rel: 0 };
  for (const [name, ref] of reference.state) {
    const r = rel(run.state.get(name)!, ref);
    if (r > worst.rel) worst = { name, rel: r };
  }
  const lossDiff = Math.max(...run.losses.map((l, k) => Math.abs(l - reference.losses[k]) / Math.abs(reference.losses[k])));
  training.push({ where: ep, s_per_step: run.stepSeconds, images_per_s: batch / run.stepSeconds, speed: cpuStep.stepSeconds / run.stepSeconds, max_rel_diff: Math.max(worst.rel, lossDiff), worst_tensor: worst.name });
  if (run.placement) notes.push(run.placement);
  log(`  ${ep}: ${ms(run.stepSeconds)} / step; after ${steps} steps the state differs from the CPU's by ${worst.rel.toExponential(2)} (${worst.name}), losses by ${lossDiff.toExponential(2)}`);
  if (run.placement) log(`  ${run.placement}`);
}

// ---- inference latency -----------------------------------------------------------------------------------------
const icfg = resolveConfig({ depth: inferDepth });
log(`${describe(icfg)}: inference, 1x3x${size}x${size}, median of ${runs} runs after 3 warm-up runs`);
const model = encodeOnnx(foldBatchNorms(buildResNet(icfg)).graph);
const u = rng(1, 'bench-gpu-image');
const image = new ort.Tensor('float32', Float32Array.from({ length: 3 * size * size }, () => 2 * u() - 1), [1, 3, size, size]);

async function latency(session: ort.InferenceSession): Promise<{ seconds: number; logits: Float32Array }> {
  let logits: Float32Array = new Float32Array();
  const times: number[] = [];
  for (let i = 0; i < 3 + runs; i++) {
    const t = performance.now();
    const out = await session.run({ input: image });
    if (i >= 3) times.push((performance.now() - t) / 1000);
    logits = out.logits.data as Float32Array;
  }
  return { seconds: median(times), logits };
}

const cpuInfer = await ort.InferenceSession.create(model, cpuOptions);
const cpuLatency = await latency(cpuInfer);
await cpuInfer.release();
inference.push({ where: 'CPU (baseline)', latency_s: cpuLatency.seconds, speed: 1, max_rel_diff: null });
log(`  CPU: ${ms(cpuLatency.seconds)}`);
for (const ep of eps as ExecutionProvider[]) {
  let ps;
  try {
    ps = await createProviderSession(model, ep, ep === 'cpu' ? cpuOptions : { graphOptimizationLevel: 'all' }, ep !== 'cpu');
  } catch (e) {
    if (!(e instanceof ProviderError)) throw e;
    inference.push({ where: `${ep}: refused`, latency_s: null, speed: null, max_rel_diff: null });
    continue;
  }
  await ps.session.run({ input: image }); // the profiled run
  if (ps.placement) notes.push(`inference: ${describePlacement(ps.placement(), ep)}`);
  const r = await latency(ps.session);
  await ps.session.release();
  const d = rel(r.logits, cpuLatency.logits);
  inference.push({ where: ep, latency_s: r.seconds, speed: cpuLatency.seconds / r.seconds, max_rel_diff: d });
  log(`  ${ep}: ${ms(r.seconds)} (${(cpuLatency.seconds / r.seconds).toFixed(2)}x the CPU), logits differ by ${d.toExponential(2)} (relative)`);
}

// ---- report ----------------------------------------------------------------------------------------------------
const versions = `onnxruntime-node ${ort.env.versions.common}, ${threads} CPU threads${process.env.NVIDIA_TF32_OVERRIDE === '0' ? ', NVIDIA_TF32_OVERRIDE=0 (fp32 math on the GPU)' : ''}`;
const fmt = (v: string | number | null | undefined, f: (n: number) => string): string => (typeof v === 'number' && Number.isFinite(v) ? f(v) : '-');
console.log(`\n### ${describe(cfg)} training step, batch ${batch}, 32x32 (${versions})\n`);
console.log(`| where | s / step | images/s | speed vs CPU step | max relative difference after ${steps} steps |`);
console.log('| --- | --- | --- | --- | --- |');
for (const r of training) console.log(`| ${r.where} | ${fmt(r.s_per_step, (n) => n.toFixed(4))} | ${fmt(r.images_per_s, (n) => n.toFixed(1))} | ${fmt(r.speed, (n) => `${n.toFixed(2)}x`)} | ${fmt(r.max_rel_diff, (n) => n.toExponential(1))} |`);
console.log(`\n### ${describe(icfg)} inference latency, 1x3x${size}x${size} (${versions})\n`);
console.log('| where | median latency | speed vs CPU | logits: max relative difference |');
console.log('| --- | --- | --- | --- |');
for (const r of inference) console.log(`| ${r.where} | ${fmt(r.latency_s, ms)} | ${fmt(r.speed, (n) => `${n.toFixed(2)}x`)} | ${fmt(r.max_rel_diff, (n) => n.toExponential(1))} |`);
if (notes.length) console.log(`\n${notes.map((n) => `- ${n}`).join('\n')}`);
mkdirSync(dirname(values.json), { recursive: true });
writeFileSync(values.json, `${JSON.stringify({ date: new Date().toISOString(), versions, training, inference, notes }, null, 2)}\n`);
log(`wrote ${values.json}`);
const refused = [...training, ...inference].filter((r) => String(r.where).endsWith(': refused'));
if (refused.length) {
  log(`error: ${[...new Set(refused.map((r) => String(r.where).replace(/: refused$/, '')))].join(', ')} could not start (see the notes above)`);
  process.exitCode = 1;
}
