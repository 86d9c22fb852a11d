// Kernel coverage: every graph the CLI writes (inference; training with the default target 'any'; every opset
// the CLI accepts) has, for every node, a kernel in onnxruntime 1.30's CUDA and WebGPU providers, as their own
// kernel tables (vendored in third_party/) say. Also: the checker on known answers, the CLI's refused opsets
// against the tables, and the spellings that made the graphs pass computing what the ops they replace compute.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { CLI_MAX_OPSET, REFUSED_OPSETS } from '../src/cli/common.js';
import { inferenceGraph } from '../src/export/inference.js';
import {
  type NodeVerdict,
  type Provider,
  type TypedNode,
  checkKernels,
  checkNode,
  kernelGaps,
  loadKernelTables,
  modelNodes,
  schemaVersion,
  summariseMissing,
} from '../src/export/kernels.js';
import { MAX_OPSET, MIN_OPSET, encodeOnnx } from '../src/export/onnx.js';
import { type OnnxTypes, onnx } from '../src/export/proto.js';
import { buildTrainingStep } from '../src/export/training.js';
import { gradients } from '../src/graph/autodiff.js';
import { type BuildTarget, GraphBuilder } from '../src/graph/builder.js';
import type { Graph } from '../src/graph/graph.js';
import { rng } from '../src/graph/init.js';
import { ACTIVATIONS, type ModelRequest, SHORTCUTS, defaultInputSize, resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { packageRoot } from '../src/util/paths.js';

const tables = loadKernelTables();
const CLI_OPSETS = Array.from({ length: CLI_MAX_OPSET - MIN_OPSET + 1 }, (_, i) => MIN_OPSET + i);
const GPU: readonly Provider[] = ['cuda', 'webgpu'];
const ALL: readonly Provider[] = ['cpu', 'cuda', 'webgpu'];

function node(op: string, inputs: (string | null)[], outputs: string[]): TypedNode {
  return { name: `a ${op}`, op, inputs, outputs };
}

describe('the vendored tables', () => {
  it('are onnxruntime 1.30 (the version in package-lock.json), with their origin and licences', () => {
    const lock = JSON.parse(readFileSync(join(packageRoot(), 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
    expect(lock.packages['node_modules/onnxruntime-node'].version).toBe('1.30.0');
    const readme = readFileSync(join(packageRoot(), 'third_party/onnxruntime-1.30.0/README.md'), 'utf8');
    expect(readme).toMatch(/microsoft\/onnxruntime/);
    expect(readme).toMatch(/VERSION_NUMBER.*1\.30\.0/);
    for (const f of ['third_party/onnxruntime-1.30.0/LICENSE', 'third_party/onnx-1.22.0/LICENSE']) expect(readFileSync(join(packageRoot(), f), 'utf8').length).toBeGreaterThan(500);
  });

  it('parse into ops, ranges and type constraints per provider', () => {
    const conv = tables.cuda.ops.get('Conv')!;
    expect(conv.ranges.map((r) => [r.start, r.end])).toEqual([[22, null], [11, 21], [1, 10]]);
    expect([...conv.ranges[1].types.get('T')!]).toContain('tensor(float)');
    expect(conv.signatures[0].map((p) => `${p.dir} ${p.name}:${p.type}`)).toEqual(['in X:T', 'in W:T', 'in B:T', 'out Y:T']);
    expect(tables.webgpu.ops.get('Add')!.ranges.map((r) => [r.start, r.end])).toEqual([[7, 12], [13, 13], [14, null]]);
    expect(tables.webgpu.ops.has('Identity')).toBe(false);
    // onnxruntime's inference builds register no SoftmaxCrossEntropyLoss kernel anywhere: they inline the ONNX function.
    expect(tables.cpu.ops.has('SoftmaxCrossEntropyLoss')).toBe(false);
  });

  it("onnx's schema versions agree with onnxruntime's CPU table for every op the graphs use", () => {
    // Each CPU kernel range starts at a schema version (onnxruntime registers kernels per schema), so a start
    // that is not one of onnx's since-versions would mean the vendored version list is wrong.
    const ops = new Set<string>();
    for (const g of [inferenceGraph(resolveConfig({ depth: 50 }), {}).graph, buildTrainingStep(resolveConfig({ depth: 50 }), { batch: 2, size: 64 }).graph]) for (const n of g.nodes) ops.add(n.op);
    for (const op of ops) {
      const versions = tables.versions.get(op);
      expect(versions, op).toBeDefined();
      for (const r of tables.cpu.ops.get(op)?.ranges ?? []) expect(versions, `${op} CPU range from ${r.start}`).toContain(r.start);
    }
    expect(schemaVersion(tables.versions, 'MaxPool', 21)).toBe(12);
    expect(schemaVersion(tables.versions, 'MaxPool', 22)).toBe(22);
    expect(schemaVersion(tables.versions, 'Gelu', 19)).toBeUndefined();
  });
});

describe('the checker, on known answers', () => {
  it('a CPU-only op: Unique has a CPU kernel and no CUDA or WebGPU kernel', () => {
    const unique = node('Unique', ['tensor(float)'], ['tensor(float)']);
    expect(checkNode(tables, 'cpu', unique, 17).ok).toBe(true);
    expect(checkNode(tables, 'cuda', unique, 17)).toMatchObject({ ok: false, reason: 'cuda has no Unique kernel at all' });
    expect(checkNode(tables, 'webgpu', unique, 17).ok).toBe(false);
    const sce = node('SoftmaxCrossEntropyLoss', ['tensor(float)', 'tensor(int64)'], ['tensor(float)', 'tensor(float)']);
    for (const p of ['cpu', 'cuda', 'webgpu'] as const) expect(checkNode(tables, p, sce, 17).ok, p).toBe(false);
  });

  it('a wrong type: a double Conv has a CUDA kernel but no CPU kernel; int32 Relu has none on CUDA; T bound to two types', () => {
    const conv = node('Conv', ['tensor(double)', 'tensor(double)', null], ['tensor(double)']);
    expect(checkNode(tables, 'cuda', conv, 17).ok).toBe(true);
    expect(checkNode(tables, 'cpu', conv, 17)).toMatchObject({ ok: false, reason: "Conv-11 on cpu: input 0 'X' is tensor(double); T allows tensor(float)" });
    expect(checkNode(tables, 'cuda', node('Relu', ['tensor(int32)'], ['tensor(int32)']), 17).reason).toMatch(/Relu-14 on cuda: input 0 'X' is tensor\(int32\); T allows .*tensor\(float\)/);
    expect(checkNode(tables, 'cuda', node('Add', ['tensor(float)', 'tensor(double)'], ['tensor(float)']), 17).reason).toMatch(/T is both tensor\(float\) and tensor\(double\)/);
    // A fixed type in the signature (Reshape's shape is tensor(int64)).
    expect(checkNode(tables, 'cuda', node('Reshape', ['tensor(float)', 'tensor(int32)'], ['tensor(float)']), 17).ok).toBe(false);
    expect(checkNode(tables, 'cuda', node('Reshape', ['tensor(float)', 'tensor(int64)'], ['tensor(float)']), 17).ok).toBe(true);
  });

  it('an opset outside a range: an open range N+ covers schema N only', () => {
    const pool = node('MaxPool', ['tensor(float)'], ['tensor(float)']);
    expect(checkNode(tables, 'cuda', pool, 21)).toMatchObject({ ok: true, schema: 12 });
    expect(checkNode(tables, 'cuda', pool, 22)).toMatchObject({ ok: false, schema: 22 });
    expect(checkNode(tables, 'cuda', pool, 22).reason).toMatch(/opset 22 means MaxPool-22; cuda registers MaxPool for 12\+, 11, 10, \[8, 9\], \[1, 7\]/);
    const gap = node('GlobalAveragePool', ['tensor(float)'], ['tensor(float)']);
    expect(checkNode(tables, 'webgpu', gap, 21).ok).toBe(true);
    expect(checkNode(tables, 'webgpu', gap, 22).ok).toBe(false);
    // A closed range covers each schema in it: Pad's [13, 17] and its 18.
    const pad = node('Pad', ['tensor(float)', 'tensor(int64)', 'tensor(float)'], ['tensor(float)']);
    for (const opset of [13, 17, 18, 19, 21]) expect(checkNode(tables, 'cuda', pad, opset).ok, `Pad at ${opset}`).toBe(true);
    expect(checkNode(tables, 'cuda', node('Gelu', ['tensor(float)'], ['tensor(float)']), 19).reason).toBe('Gelu is not an ONNX op at opset 19');
  });

  it('reads an ONNX ModelProto as it reads the graph it was written from', () => {
    const g = buildTrainingStep(resolveConfig({ depth: 20 }), { batch: 2, size: 32 }).graph;
    const model = encodeOnnx({ ...g, initializers: g.initializers.filter((i) => i.data.dims.reduce((p, d) => p * d, 1) < 1e5) }, { opset: 17 });
    const { opset, nodes } = modelNodes(model);
    expect(opset).toBe(17);
    // Types learned from the file (inputs, initializers, propagation) are the DSL's.
    const fromGraph = checkKernels('cuda', { graph: g, opset: 17 });
    expect(nodes.filter((n) => n.inputs.includes(undefined) || n.outputs.includes(undefined)).map((n) => n.name)).toEqual([]);
    expect(checkKernels('cuda', { model })).toEqual(fromGraph);
  });

  it('finds a double Conv and a CPU-only op in a hand-written model', () => {
    const t = (name: string, elemType: number): OnnxTypes.IValueInfoProto => ({ name, type: { tensorType: { elemType, shape: { dim: [{ dimValue: 1 }, { dimValue: 1 }, { dimValue: 4 }, { dimValue: 4 }] } } } });
    const model = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'g',
        input: [t('x', 11), t('w', 11)],
        output: [t('y', 11)],
        node: [
          { name: 'conv', opType: 'Conv', input: ['x', 'w'], output: ['c'] },
          { name: 'unique', opType: 'Unique', input: ['c'], output: ['y'] },
        ],
      },
    }).finish();
    const cpu = checkKernels('cpu', { model });
    expect(cpu.map((v) => [v.node, v.ok])).toEqual([['conv', false], ['unique', true]]);
    const cuda = checkKernels('cuda', { model });
    expect(cuda.map((v) => [v.node, v.ok])).toEqual([['conv', true], ['unique', false]]);
  });
});

// ---- every graph the CLI writes ----

interface Net {
  name: string;
  req: ModelRequest;
  training: boolean;
}

const NAMED: Net[] = [
  { name: 'CIFAR ResNet-20 (basic, option A)', req: { depth: 20 }, training: true },
  { name: 'Fashion-MNIST ResNet-20 (1 channel, 28x28)', req: { depth: 20, dataset: 'fashion-mnist' }, training: true },
  { name: 'CIFAR-100 ResNet-164 (bottleneck)', req: { depth: 164, dataset: 'cifar100' }, training: true },
  { name: 'ImageNet ResNet-50 (bottleneck)', req: { depth: 50 }, training: true },
  { name: 'ImageNet ResNet-18 (basic)', req: { depth: 18 }, training: true },
  { name: 'ImageNet ResNet-200', req: { depth: 200 }, training: false },
];

/** Small nets of each kind in every activation and shortcut variant: the ops do not depend on depth. */
function variants(): Net[] {
  const kinds: [string, ModelRequest][] = [
    ['CIFAR basic 1-1-1', { dataset: 'cifar10', stages: [1, 1, 1] }],
    ['CIFAR basic 1-1-1 projection B', { dataset: 'cifar10', stages: [1, 1, 1], projection: 'B' }],
    ['CIFAR single-layer units 1-1-1', { dataset: 'cifar10', stages: [1, 1, 1], unit: 'single' }],
    ['CIFAR bottleneck 2-1-1', { dataset: 'cifar10', stages: [2, 1, 1], unit: 'bottleneck' }],
    ['ImageNet bottleneck 2-1-1-1', { dataset: 'imagenet', stages: [2, 1, 1, 1], unit: 'bottleneck', classes: 10 }],
  ];
  const out: Net[] = [];
  for (const [kind, req] of kinds) {
    for (const activation of ACTIVATIONS) out.push({ name: `${kind}, ${activation}`, req: { ...req, activation }, training: true });
    for (const shortcut of SHORTCUTS) if (shortcut !== 'identity') out.push({ name: `${kind}, ${shortcut} shortcut`, req: { ...req, shortcut: { kind: shortcut } }, training: true });
  }
  // Layouts of imported weights (import, pull): timm ResNetV2 and fb.resnet.torch's ResNet-200 (inference only).
  out.push({ name: 'ImageNet 2-1-1-1, timm layout', req: { dataset: 'imagenet', stages: [2, 1, 1, 1], unit: 'bottleneck', layout: { origin: 'timm', stemNorm: false, firstPreact: 'split-if-projecting' } }, training: false });
  out.push({ name: 'ImageNet 2-1-1-1, fb.resnet.torch layout', req: { dataset: 'imagenet', stages: [2, 1, 1, 1], unit: 'bottleneck', layout: { origin: 'fb.resnet.torch', firstPreact: 'branch', projectionNorm: true, convBias: true } }, training: false });
  return out;
}

/** The inference graphs `export` writes for a net: folded (default), unfolded (--no-fold), with probabilities. */
function inferenceGraphs(req: ModelRequest): [string, Graph][] {
  const cfg = resolveConfig(req);
  return [
    ['inference', inferenceGraph(cfg, {}).graph],
    ['inference --no-fold --probabilities', inferenceGraph(cfg, { fold: false, probabilities: true }).graph],
  ];
}

/**
 * The training graphs `export --training` writes with the default target 'any'; with `sgdOptions`, also with the
 * SGD options that add nodes (Nesterov, decay on weights only), which the small nets check.
 */
function trainingGraphs(req: ModelRequest, sgdOptions = false): [string, Graph][] {
  const cfg = resolveConfig(req);
  const size = defaultInputSize(cfg);
  const out: [string, Graph][] = [['training', buildTrainingStep(cfg, { batch: 2, size }).graph]];
  if (sgdOptions) out.push(['training --nesterov --decay-on weights', buildTrainingStep(cfg, { batch: 2, size, sgd: { nesterov: true, decayOn: 'weights' } }).graph]);
  return out;
}

/** What may legitimately lack a kernel: onnxruntime-web has no Dropout (nor any random-number) kernel. */
function allowed(net: Net, kind: string, provider: Provider, v: NodeVerdict): boolean {
  return provider === 'webgpu' && kind.startsWith('training') && net.req.shortcut?.kind === 'dropout' && v.op === 'Dropout';
}

function expectCovered(net: Net, kind: string, g: Graph): void {
  const gaps = kernelGaps(g, CLI_OPSETS, ALL, tables);
  const problems: string[] = [];
  for (const provider of ALL)
    for (const opset of CLI_OPSETS) {
      const missing = gaps.get(provider)!.get(opset)!.filter((v) => !allowed(net, kind, provider, v));
      if (missing.length) problems.push(`${net.name}, ${kind}, ${provider}, opset ${opset}: ${summariseMissing(missing).join('; ')}`);
    }
  expect(problems).toEqual([]);
}

describe(`every node has a CPU, a CUDA and a WebGPU kernel at every opset the CLI accepts (${MIN_OPSET}..${CLI_MAX_OPSET})`, () => {
  for (const net of NAMED) {
    it(net.name, () => {
      for (const [kind, g] of inferenceGraphs(net.req)) expectCovered(net, kind, g);
      if (net.training) for (const [kind, g] of trainingGraphs(net.req)) expectCovered(net, kind, g);
    }, 60_000);
  }
  const all = variants();
  for (const family of ['CIFAR basic 1-1-1', 'CIFAR single', 'CIFAR bottleneck', 'ImageNet']) {
    it(`${family}: every activation and shortcut variant${family === 'ImageNet' ? ', and the imported layouts' : ''}`, () => {
      const nets = all.filter((n) => n.name.startsWith(family) && (family !== 'CIFAR basic 1-1-1' || !n.name.includes('projection B')));
      const extra = family === 'CIFAR basic 1-1-1' ? all.filter((n) => n.name.includes('projection B')) : [];
      expect(nets.length).toBeGreaterThan(1);
      for (const net of [...nets, ...extra]) {
        for (const [kind, g] of inferenceGraphs(net.req)) expectCovered(net, kind, g);
        if (net.training) for (const [kind, g] of trainingGraphs(net.req, true)) expectCovered(net, kind, g);
      }
    }, 60_000);
  }

  it('the dropout shortcut\'s training graph lacks WebGPU kernels for its Dropout nodes only (onnxruntime-web has no random-number kernel)', () => {
    const g = buildTrainingStep(resolveConfig({ depth: 20, shortcut: { kind: 'dropout' } }), { batch: 2, size: 32 }).graph;
    const missing = kernelGaps(g, [17], ['webgpu'], tables).get('webgpu')!.get(17)!;
    expect(new Set(missing.map((v) => v.op))).toEqual(new Set(['Dropout']));
    expect(buildResNet(resolveConfig({ depth: 20, shortcut: { kind: 'dropout' } })).nodes.some((n) => n.op === 'Dropout')).toBe(false);
  });
});

describe('opsets the ONNX writer could emit but the CLI refuses', () => {
  it('are exactly those with gaps, and each reason names every missing kernel per provider', () => {
    const refused = Object.keys(REFUSED_OPSETS).map(Number);
    expect([...CLI_OPSETS, ...refused].sort((a, b) => a - b)).toEqual(Array.from({ length: MAX_OPSET - MIN_OPSET + 1 }, (_, i) => MIN_OPSET + i));
    // Small nets of each kind: the ops do not depend on depth.
    const nets: ModelRequest[] = [
      { dataset: 'cifar10', stages: [1, 1, 1] },
      { dataset: 'cifar10', stages: [2, 1, 1], unit: 'bottleneck' },
      { dataset: 'imagenet', stages: [2, 1, 1, 1], unit: 'bottleneck', classes: 10 },
      { dataset: 'cifar10', stages: [1, 1, 1], shortcut: { kind: 'dropout' } },
    ];
    for (const opset of refused) {
      const missing: Record<string, Set<string>> = { cuda: new Set(), webgpu: new Set() };
      for (const req of nets) {
        const cfg = resolveConfig(req);
        for (const g of [inferenceGraph(cfg, {}).graph, buildTrainingStep(cfg, { batch: 2, size: defaultInputSize(cfg) }).graph]) {
          const gaps = kernelGaps(g, [opset], ALL, tables);
          expect(gaps.get('cpu')!.get(opset)!, `opset ${opset}: the CPU runs every node`).toEqual([]);
          for (const provider of GPU)
            for (const v of gaps.get(provider)!.get(opset)!) if (!(provider === 'webgpu' && v.op === 'Dropout')) missing[provider].add(`${v.op}-${v.schema}`);
        }
      }
      expect(missing.cuda.size + missing.webgpu.size, `opset ${opset} is refused, so something must be missing there`).toBeGreaterThan(0);
      const [cudaPart, webPart] = REFUSED_OPSETS[opset].split(/, and /);
      for (const k of missing.cuda) expect(cudaPart, `opset ${opset}: CUDA lacks ${k}`).toContain(k);
      for (const k of missing.webgpu) expect(webPart, `opset ${opset}: WebGPU lacks ${k}`).toContain(k);
      expect(cudaPart).toMatch(/CUDA/);
      expect(webPart).toMatch(/WebGPU/);
    }
  }, 60_000);
});

// ---- the spellings compute what the ops they replace compute ----

function randomFloats(n: number, seed: string): Float32Array {
  const u = rng(5, seed);
  return Float32Array.from({ length: n }, () => 2 * u() - 1);
}

async function run(g: Graph, feeds: Record<string, ort.Tensor>): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(encodeOnnx(g), { intraOpNumThreads: 1 });
  try {
    const out = await session.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await session.release();
  }
}

describe('the spellings for target any equal the ops they replace (onnxruntime CPU)', () => {
  it('cross-entropy: the expansion of SoftmaxCrossEntropyLoss gives the op\'s loss, log-probabilities and gradient', async () => {
    const build = (target: BuildTarget): Graph => {
      const b = new GraphBuilder('ce', 0, 'training', target);
      const x = b.input('x', 'float32', [6, 7]);
      const labels = b.input('labels', 'int64', [6]);
      const [loss, logProb] = b.op('SoftmaxCrossEntropyLoss', [x, labels], { reduction: 'mean' }, { name: 'ce', outputs: 2 });
      const [dx] = gradients(b, loss, [x]);
      b.output(loss, 'loss');
      b.output(logProb, 'log_prob');
      b.output(dx, 'dx');
      return b.build();
    };
    const [any, cpu] = [build('any'), build('onnxruntime-cpu')];
    expect(any.nodes.map((n) => n.op)).not.toContain('SoftmaxCrossEntropyLoss');
    expect(any.nodes.map((n) => n.op)).not.toContain('OneHot');
    expect(cpu.nodes.map((n) => n.op)).toContain('SoftmaxCrossEntropyLoss');
    // Large logits too: the log-softmax must subtract the maximum, as onnxruntime's kernel does.
    const x = randomFloats(42, 'x').map((v, i) => (i % 7 === 3 ? v * 80 : v * 5));
    const feeds = { x: new ort.Tensor('float32', x, [6, 7]), labels: new ort.Tensor('int64', BigInt64Array.of(0n, 6n, 3n, 3n, 1n, 5n), [6]) };
    const [a, c] = await Promise.all([run(any, feeds), run(cpu, feeds)]);
    for (const k of ['loss', 'log_prob', 'dx']) {
      expect(a[k].every(Number.isFinite), k).toBe(true);
      a[k].forEach((v, i) => expect(v, `${k}[${i}]`).toBeCloseTo(c[k][i], 5));
    }
  });

  it('MaxPool gradient without indices: the first maximum of each window gets dY, ties included, as the scatter of indices gives it', async () => {
    const build = (target: BuildTarget, shape: number[], attrs: Record<string, number[]>): Graph => {
      const b = new GraphBuilder('pool', 0, 'training', target);
      const x = b.input('x', 'float32', shape);
      const y = b.op1('MaxPool', [x], attrs, { name: 'pool' });
      const r = b.input('r', 'float32', y.shape as number[]);
      const loss = b.op1('ReduceSum', [b.op1('Mul', [y, r], {}, { name: 'weighted' })], { keepdims: 0 }, { name: 'loss' });
      const [dx] = gradients(b, loss, [x]);
      b.output(loss, 'loss');
      b.output(dx, 'dx');
      return b.build();
    };
    const cases: [number[], Record<string, number[]>][] = [
      [[2, 3, 9, 8], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
      [[1, 2, 7, 7], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
      [[1, 2, 6, 5], { kernel_shape: [2, 2], strides: [2, 2] }],
      [[1, 1, 5, 6], { kernel_shape: [3, 2], strides: [1, 2], pads: [0, 1, 1, 0] }],
    ];
    for (const [shape, attrs] of cases) {
      const [any, cpu] = [build('any', shape, attrs), build('onnxruntime-cpu', shape, attrs)];
      expect(any.nodes.map((n) => n.op).filter((op) => ['ScatterElements', 'ConstantOfShape'].includes(op))).toEqual([]);
      expect(any.nodes.filter((n) => n.op === 'MaxPool').map((n) => n.outputs.length)).toEqual([1]);
      const n = shape.reduce((p, d) => p * d, 1);
      // A ReLU-like input: many exact zeros, so windows tie (as after the ImageNet stem's ReLU), and some equal values.
      const x = randomFloats(n, `x${shape}`).map((v) => (v < 0 ? 0 : Math.round(v * 4) / 4));
      const yShape = any.types.get('pool')!.shape.map(Number);
      const r = randomFloats(yShape.reduce((p, d) => p * d, 1), 'r');
      const feeds = { x: new ort.Tensor('float32', x, shape), r: new ort.Tensor('float32', r, yShape) };
      const [a, c] = await Promise.all([run(any, feeds), run(cpu, feeds)]);
      a.dx.forEach((v, i) => expect(v, `${JSON.stringify(attrs)} dx[${i}]`).toBeCloseTo(c.dx[i], 6));
    }
  });
});
