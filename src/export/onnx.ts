// Writes a Graph as an ONNX ModelProto. Initializers are streamed one at a time (each produced, written and
// dropped), so exporting ResNet-200 needs memory for the largest tensor, not for the whole model.

import { endianness } from 'node:os';
import { type OnnxTypes, onnx } from './proto.js';
import protobuf from 'protobufjs/minimal.js';
import type { Graph, Node, ValueInfo } from '../graph/graph.js';
import { type Put, writeFileAtomic, writeFileAtomicAsync, yieldToEventLoop } from './atomic.js';
import type { Attr } from '../graph/ops.js';
import { type TensorData, ONNX_DTYPE, isSym } from '../graph/types.js';

export const DEFAULT_OPSET = 17;
export const MIN_OPSET = 13;
export const MAX_OPSET = 22;

/** The lowest IR version that can hold a model of the given opset (onnx/onnx docs/Versioning.md). */
export function irVersionFor(opset: number): number {
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

export interface WriteOptions {
  opset?: number;
  docString?: string;
  metadata?: Readonly<Record<string, string>>;
  producerVersion?: string;
  /** Called as bytes are written: (written, total). */
  progress?: (written: number, total: number) => void;
}

function tensorHeader(name: string, t: TensorData): OnnxTypes.ITensorProto {
  return { name, dims: [...t.dims], dataType: ONNX_DTYPE[t.dtype] };
}

function bytesOf(t: TensorData): Uint8Array {
  const v = t.values();
  const expected = t.dims.reduce((p, d) => p * d, 1);
  if (v.length !== expected) throw new Error(`tensor has ${v.length} values but dims [${t.dims.join(', ')}] need ${expected}`);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function tensorProto(name: string, t: TensorData): OnnxTypes.ITensorProto {
  return { ...tensorHeader(name, t), rawData: bytesOf(t) };
}

function attrProto(name: string, a: Attr): OnnxTypes.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.kind) {
    case 'int':
      return { name, type: T.INT, i: a.value };
    case 'float':
      return { name, type: T.FLOAT, f: a.value };
    case 'ints':
      return { name, type: T.INTS, ints: [...a.value] };
    case 'floats':
      return { name, type: T.FLOATS, floats: [...a.value] };
    case 'string':
      return { name, type: T.STRING, s: new TextEncoder().encode(a.value) };
    case 'tensor':
      return { name, type: T.TENSOR, t: tensorProto('', a.value) };
  }
}

function nodeProto(n: Node): OnnxTypes.INodeProto {
  return {
    name: n.name,
    opType: n.op,
    input: [...n.inputs],
    output: [...n.outputs],
    attribute: Object.entries(n.attrs).map(([k, a]) => attrProto(k, a)),
  };
}

export function valueInfoProto(v: ValueInfo): OnnxTypes.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[v.dtype],
        shape: { dim: v.shape.map((d) => (isSym(d) ? { dimParam: d.text } : { dimValue: d })) },
      },
    },
  };
}

function varintLength(n: number): number {
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** Tag and length prefix of a length-delimited protobuf field. */
function fieldPrefix(field: number, length: number): Uint8Array {
  return protobuf.Writer.create().uint32((field << 3) | 2).uint32(length).finish();
}

const GRAPH_FIELD_IN_MODEL = 7;
const INITIALIZER_FIELD_IN_GRAPH = 5;
const RAW_DATA_FIELD_IN_TENSOR = 9;

export function checkOpset(opset: number): void {
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET)
    throw new Error(`--opset must be an integer from ${MIN_OPSET} to ${MAX_OPSET} (the ops this project emits are defined alike there), got ${opset}`);
}

/**
 * The bytes of a model file as pieces: the model's and graph's fields, then one group per initializer, each
 * produced (random init, folding, a checkpoint read) only when the group is asked for. Sizes are computed from
 * dims alone, so the graph's length prefix is written before its tensors.
 */
function modelPieces(graph: Graph, opts: WriteOptions): { total: number; groups: () => Generator<Uint8Array[]> } {
  if (endianness() !== 'LE') throw new Error('ONNX raw_data is little-endian; this machine is big-endian');
  checkOpset(opts.opset ?? DEFAULT_OPSET);
  const head = onnx.ModelProto.encode(modelFields(opts)).finish();
  const graphHead = onnx.GraphProto.encode(graphFields(graph, opts)).finish();
  const inits = graph.initializers.map((init) => {
    const header = onnx.TensorProto.encode(tensorHeader(init.name, init.data)).finish();
    const elemSize = init.data.dtype === 'int64' ? 8 : init.data.dtype === 'bool' ? 1 : 4;
    const rawLen = init.data.dims.reduce((p, d) => p * d, 1) * elemSize;
    const tensorLen = header.length + 1 + varintLength(rawLen) + rawLen;
    return { init, header, rawLen, tensorLen, fieldLen: 1 + varintLength(tensorLen) + tensorLen };
  });
  const graphLen = graphHead.length + inits.reduce((s, i) => s + i.fieldLen, 0);
  const total = head.length + 1 + varintLength(graphLen) + graphLen;
  function* groups(): Generator<Uint8Array[]> {
    yield [head, fieldPrefix(GRAPH_FIELD_IN_MODEL, graphLen), graphHead];
    for (const { init, header, rawLen, tensorLen } of inits) {
      const raw = bytesOf(init.data);
      if (raw.length !== rawLen) throw new Error(`initializer ${init.name}: ${raw.length} bytes, ${rawLen} expected`);
      yield [fieldPrefix(INITIALIZER_FIELD_IN_GRAPH, tensorLen), header, fieldPrefix(RAW_DATA_FIELD_IN_TENSOR, rawLen), raw];
    }
  }
  return { total, groups };
}

/** Writes one group and reports progress; returns the bytes written so far. */
function putGroup(put: Put, group: Uint8Array[], written: number, total: number, opts: WriteOptions): number {
  for (const bytes of group) {
    put(bytes);
    written += bytes.length;
  }
  opts.progress?.(written, total);
  return written;
}

function checkTotal(written: number, total: number): void {
  if (written !== total) throw new Error(`internal error: wrote ${written} bytes, planned ${total}`);
}

/**
 * Writes `graph` to `path` atomically (a temporary file renamed into place): a failed or interrupted export
 * never leaves a truncated model behind. Returns the file size in bytes. Synchronous: a signal is handled only
 * after the whole file; the CLI uses writeOnnxAsync.
 */
export function writeOnnx(graph: Graph, path: string, opts: WriteOptions = {}): number {
  const { total, groups } = modelPieces(graph, opts);
  writeFileAtomic(path, (put) => {
    let written = 0;
    for (const group of groups()) written = putGroup(put, group, written, total, opts);
    checkTotal(written, total);
  });
  return total;
}

/** As writeOnnx, yielding to the event loop after each initializer, so that an interrupt stops it promptly. */
export async function writeOnnxAsync(graph: Graph, path: string, opts: WriteOptions = {}): Promise<number> {
  const { total, groups } = modelPieces(graph, opts);
  await writeFileAtomicAsync(path, async (put) => {
    let written = 0;
    for (const group of groups()) {
      written = putGroup(put, group, written, total, opts);
      await yieldToEventLoop();
    }
    checkTotal(written, total);
  });
  return total;
}

/** Encodes a whole (small) model in memory, e.g. for tests or a single op. */
export function encodeOnnx(graph: Graph, opts: WriteOptions = {}): Uint8Array {
  checkOpset(opts.opset ?? DEFAULT_OPSET);
  const g = { ...graphFields(graph, opts), initializer: graph.initializers.map((i) => tensorProto(i.name, i.data)) };
  return onnx.ModelProto.encode({ ...modelFields(opts), graph: g }).finish();
}

/** ModelProto fields other than the graph. */
function modelFields(opts: WriteOptions): OnnxTypes.IModelProto {
  const opset = opts.opset ?? DEFAULT_OPSET;
  return {
    irVersion: irVersionFor(opset),
    producerName: 'resnet-onnx',
    producerVersion: opts.producerVersion ?? '0.1.0',
    docString: opts.docString ?? '',
    opsetImport: [{ domain: '', version: opset }],
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
}

/** GraphProto fields other than the initializers. */
function graphFields(graph: Graph, opts: WriteOptions): OnnxTypes.IGraphProto {
  return {
    name: graph.name,
    docString: opts.docString ?? '',
    node: graph.nodes.map(nodeProto),
    input: graph.inputs.map(valueInfoProto),
    output: graph.outputs.map(valueInfoProto),
  };
}
