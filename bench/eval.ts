// eval's throughput against raw onnxruntime on the same model, same images, same batch and threads, in this run.
// Raw: the test split normalised once up front, then InferenceSession.run over it in batches (the inference alone,
// onnxruntime's default session options). eval: the whole `evaluateModel` call (worker start, data reading,
// preprocessing with the server's code, inference, scoring). The two alternate; the figure is the median round.
// Usage: npx tsx bench/eval.ts [--model models/preact-resnet20-fashion-mnist.onnx] [--data DIR] [--batch 128]
//        [--limit N] [--rounds 5] [--threads N]

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { evaluateModel, evalPreprocessing, spread } from '../src/eval/evaluate.js';
import { openLabelledSet } from '../src/eval/data.js';
import { viewSize, viewsOf } from '../src/eval/views.js';
import { readModelInfo } from '../src/serve/model-info.js';
import { DEBIAN_FASHION_MNIST } from '../src/train/datasets.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/preact-resnet20-fashion-mnist.onnx' },
    data: { type: 'string', default: DEBIAN_FASHION_MNIST },
    batch: { type: 'string', default: '128' },
    limit: { type: 'string' },
    rounds: { type: 'string', default: '5' },
    threads: { type: 'string', default: String(availableParallelism()) },
  },
});
const batch = Number(values.batch);
const threads = Number(values.threads);
const rounds = Number(values.rounds);
const limit = values.limit === undefined ? undefined : Number(values.limit);
const model = values.model!;

// The raw side's inputs: the same images through the same preprocessing, done before the clock starts.
const info = readModelInfo(model);
const { pre } = evalPreprocessing(info);
const classes = Number(info.metadata.classes ?? info.labels.length);
const set = await openLabelledSet({ data: values.data!, split: 'test', labels: info.labels, classes }, info.metadata.dataset);
const order = spread(set.length, limit);
const per = viewSize({ pre, tenCrop: false });
const inputs = new Float32Array(order.length * per);
for (let k = 0; k < order.length; k++) {
  const src = await set.read(order[k]);
  if ('error' in src) throw new Error(src.error);
  await viewsOf(src, { pre, tenCrop: false }, inputs, k * per);
}
const dims = [pre.channelOrder === 'L' ? 1 : 3, pre.crop, pre.crop];

async function raw(): Promise<number> {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: threads });
  await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', inputs.subarray(0, per), [1, ...dims]) });
  const t0 = performance.now();
  for (let from = 0; from < order.length; from += batch) {
    const n = Math.min(batch, order.length - from);
    await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', inputs.subarray(from * per, (from + n) * per), [n, ...dims]) });
  }
  const s = (performance.now() - t0) / 1000;
  await session.release();
  return order.length / s;
}

let scored = '';
async function ours(): Promise<{ whole: number; loop: number }> {
  const t0 = performance.now();
  const r = await evaluateModel({ model, data: values.data, batch, limit, threads });
  const s = (performance.now() - t0) / 1000;
  if (r.images !== order.length) throw new Error(`eval scored ${r.images} images, ${order.length} expected`);
  scored = `eval's result: top-1 ${(100 * r.top1).toFixed(2)}% (${r.correct1} of ${r.images}), top-5 ${(100 * r.top5).toFixed(2)}%`;
  return { whole: r.images / s, loop: r.images / r.loopSeconds };
}

const rawRates: number[] = [];
const evalRates: number[] = [];
const loopRates: number[] = [];
for (let k = 0; k < rounds; k++) {
  rawRates.push(await raw());
  const e = await ours();
  evalRates.push(e.whole);
  loopRates.push(e.loop);
  console.error(`round ${k + 1}/${rounds}: raw ${rawRates[k].toFixed(0)} images/s, eval ${evalRates[k].toFixed(0)} images/s (loop ${loopRates[k].toFixed(0)})`);
}
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const ratios = rawRates.map((r, k) => evalRates[k] / r);
const loopRatios = rawRates.map((r, k) => loopRates[k] / r);
console.log(`${info.architecture}, ${order.length} images of ${set.description} (${values.data}), batch ${batch}, ${threads} threads; ${rounds} alternating rounds, median`);
console.log('| what | images/s | vs raw onnxruntime |');
console.log('| --- | --- | --- |');
console.log(`| raw onnxruntime-node: InferenceSession.run on pre-normalised batches (baseline) | ${median(rawRates).toFixed(0)} | 1.00x |`);
console.log(`| \`resnet-onnx eval\`, its loop (preprocessing with the server's code, inference in the worker, scoring) | ${median(loopRates).toFixed(0)} | ${(median(loopRates) / median(rawRates)).toFixed(2)}x (median of per-round ratios ${median(loopRatios).toFixed(2)}x) |`);
console.log(`| \`resnet-onnx eval\`, the whole call (also loading the model in the worker and reading the data) | ${median(evalRates).toFixed(0)} | ${(median(evalRates) / median(rawRates)).toFixed(2)}x (median of per-round ratios ${median(ratios).toFixed(2)}x) |`);
console.log(scored);
