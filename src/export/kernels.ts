// Which execution provider has a kernel for each node of a graph, read from onnxruntime's own kernel tables
// (vendored under third_party/onnxruntime-1.30.0, see its README): docs/OperatorKernels.md (CPU, CUDA: ops,
// opset ranges, type constraints) and js/web/docs/webgpu-operators.md (WebGPU in onnxruntime-web: ops and
// opset ranges, no types). An op's schema versions (which ONNX schema a node of opset k follows) come from onnx's
// docs/Operators.md (third_party/onnx-1.22.0/operator-versions.json; onnx 1.22 is what onnxruntime 1.30 builds).
//
// How onnxruntime matches a node to a kernel (KernelRegistry::VerifyKernelDef): the node's schema version s is
// the op's largest since-version <= the model's opset; a kernel registered for [a, b] matches when a <= s <= b; a
// kernel registered open-ended (`a+` in the tables) matches only s == a. So `12+` does not cover an op whose
// schema changed at 22, even though 22 > 12: such a node has no kernel on that provider and falls back to the CPU.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Graph } from '../graph/graph.js';
import type { DType } from '../graph/types.js';
import { packageRoot } from '../util/paths.js';
import { onnx } from './proto.js';

export const ONNXRUNTIME_TABLES = 'third_party/onnxruntime-1.30.0';
export const ONNX_VERSIONS = 'third_party/onnx-1.22.0/operator-versions.json';

export type Provider = 'cpu' | 'cuda' | 'webgpu';
export const PROVIDERS: readonly Provider[] = ['cpu', 'cuda', 'webgpu'];

/** One registered kernel: an opset range and, where the table gives them, the types of each constraint. */
export interface KernelRange {
  readonly start: number;
  /** Last schema version covered; null for an open range (`13+`), which covers only `start` itself. */
  readonly end: number | null;
  /** Type constraint name -> allowed types, e.g. T -> {tensor(float), tensor(double)}; empty for WebGPU. */
  readonly types: ReadonlyMap<string, ReadonlySet<string>>;
}

interface Param {
  readonly dir: 'in' | 'out';
  readonly name: string;
  /** A constraint name (`T`) or a fixed type (`tensor(int64)`). */
  readonly type: string;
}

export interface OpKernels {
  readonly op: string;
  /** The op's signatures as the table lists them (several when versions differ); empty for WebGPU. */
  readonly signatures: readonly (readonly Param[])[];
  readonly ranges: readonly KernelRange[];
}

export interface KernelTable {
  readonly provider: Provider;
  /** Whether the table states types (CPU and CUDA do; the WebGPU table does not). */
  readonly typed: boolean;
  /** ai.onnx (default domain) ops only. */
  readonly ops: ReadonlyMap<string, OpKernels>;
}

const SECTION: Record<'cpu' | 'cuda', string> = { cpu: 'CPUExecutionProvider', cuda: 'CUDAExecutionProvider' };

function parseRange(text: string): { start: number; end: number | null } {
  const t = text.trim();
  let m = /^(\d+)\+$/.exec(t);
  if (m) return { start: Number(m[1]), end: null };
  m = /^\[(\d+),\s*(\d+)\]$/.exec(t) ?? /^(\d+)-(\d+)$/.exec(t);
  if (m) return { start: Number(m[1]), end: Number(m[2]) };
  m = /^(\d+)$/.exec(t);
  if (m) return { start: Number(m[1]), end: Number(m[1]) };
  throw new Error(`unreadable opset range '${text}'`);
}

function parseTypes(cell: string): Map<string, Set<string>> {
  const types = new Map<string, Set<string>>();
  for (const part of cell.split('<br/>')) {
    const m = /\*\*([^*]+)\*\*\s*=\s*(.*)$/.exec(part.trim());
    if (!m) continue;
    types.set(m[1], new Set(splitTypes(m[2])));
  }
  return types;
}

/** `tensor(float), seq(tensor(int64))` -> its items (commas inside parentheses do not split). */
function splitTypes(list: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of list) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function parseSignatures(cell: string): Param[][] {
  return cell.split('<br><br>or<br><br>').map((alt) => {
    const params: Param[] = [];
    for (const m of alt.matchAll(/\*(in|out)\*\s+([^:<]+):\*\*([^*]+)\*\*/g)) params.push({ dir: m[1] as 'in' | 'out', name: m[2].trim(), type: m[3].trim() });
    return params;
  });
}

/** The ai.onnx part of one provider's table in onnxruntime's docs/OperatorKernels.md. */
export function parseOperatorKernels(md: string, provider: 'cpu' | 'cuda'): KernelTable {
  const heading = `## Operators implemented by ${SECTION[provider]}`;
  const at = md.indexOf(heading);
  if (at < 0) throw new Error(`OperatorKernels.md has no section '${heading}'`);
  const next = md.indexOf('\n## ', at + heading.length);
  const lines = md.slice(at, next < 0 ? undefined : next).split('\n');
  const ops = new Map<string, { op: string; signatures: Param[][]; ranges: KernelRange[] }>();
  let domain = '';
  let current: { op: string; signatures: Param[][]; ranges: KernelRange[] } | undefined;
  for (const line of lines) {
    if (!line.startsWith('|') || line.startsWith('|Op Name') || line.startsWith('|---')) continue;
    const dom = /\*\*Operator Domain:\*\*\s*\*([^*]+)\*/.exec(line);
    if (dom) {
      domain = dom[1];
      current = undefined;
      continue;
    }
    const cells = line.split('|').slice(1, -1);
    if (cells.length < 4) continue;
    const [name, params, range, types] = cells;
    if (domain !== 'ai.onnx') continue;
    if (name) {
      current = ops.get(name);
      if (!current) {
        current = { op: name, signatures: parseSignatures(params), ranges: [] };
        ops.set(name, current);
      }
    }
    if (!current) throw new Error(`OperatorKernels.md: a continuation row before any op: ${line}`);
    current.ranges.push({ ...parseRange(range), types: parseTypes(types) });
  }
  if (ops.size === 0) throw new Error(`OperatorKernels.md: no ai.onnx ops under '${heading}'`);
  return { provider, typed: true, ops };
}

/** onnxruntime-web's docs/webgpu-operators.md: `| Add | ai.onnx(7-12,13,14+) | comment |`. */
export function parseWebGpuOperators(md: string): KernelTable {
  const ops = new Map<string, OpKernels>();
  for (const line of md.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !cells[1] || cells[1] === 'Operator' || cells[1].startsWith(':')) continue;
    const m = /(?:^|;\s*)ai\.onnx\(([^)]*)\)/.exec(cells[2]);
    if (!m) continue;
    const ranges = m[1].split(',').map((r) => ({ ...parseRange(r), types: new Map<string, Set<string>>() }));
    ops.set(cells[1], { op: cells[1], signatures: [], ranges });
  }
  if (ops.size === 0) throw new Error('webgpu-operators.md: no ai.onnx ops found');
  return { provider: 'webgpu', typed: false, ops };
}

/** Each ai.onnx op's schema since-versions, ascending. */
export type SchemaVersions = ReadonlyMap<string, readonly number[]>;

export function parseSchemaVersions(json: string): SchemaVersions {
  const parsed = JSON.parse(json) as { ops: Record<string, number[]> };
  return new Map(Object.entries(parsed.ops).map(([op, vs]) => [op, [...vs].sort((a, b) => a - b)]));
}

/** The since-version of the op's schema in effect at `opset`, or undefined if the op does not exist there. */
export function schemaVersion(versions: SchemaVersions, op: string, opset: number): number | undefined {
  const vs = versions.get(op);
  if (!vs) return undefined;
  let v: number | undefined;
  for (const s of vs) if (s <= opset) v = s;
  return v;
}

export interface KernelTables {
  readonly cpu: KernelTable;
  readonly cuda: KernelTable;
  readonly webgpu: KernelTable;
  readonly versions: SchemaVersions;
}

let cached: KernelTables | undefined;

/** The vendored tables, read once. */
export function loadKernelTables(root = packageRoot()): KernelTables {
  if (cached && root === packageRoot()) return cached;
  const md = readFileSync(join(root, ONNXRUNTIME_TABLES, 'OperatorKernels.md'), 'utf8');
  const tables: KernelTables = {
    cpu: parseOperatorKernels(md, 'cpu'),
    cuda: parseOperatorKernels(md, 'cuda'),
    webgpu: parseWebGpuOperators(readFileSync(join(root, ONNXRUNTIME_TABLES, 'webgpu-operators.md'), 'utf8')),
    versions: parseSchemaVersions(readFileSync(join(root, ONNX_VERSIONS), 'utf8')),
  };
  if (root === packageRoot()) cached = tables;
  return tables;
}

/** What the checker needs of a node: its op and the ONNX type (`tensor(float)`) of each input and output. */
export interface TypedNode {
  readonly name: string;
  readonly op: string;
  /** null: an omitted optional input; undefined: a type the checker could not learn (not checked). */
  readonly inputs: readonly (string | null | undefined)[];
  readonly outputs: readonly (string | undefined)[];
}

export interface NodeVerdict {
  readonly node: string;
  readonly op: string;
  readonly provider: Provider;
  /** The op's schema version at the graph's opset (undefined: no such op at that opset). */
  readonly schema: number | undefined;
  readonly ok: boolean;
  /** Why not, when !ok: what the table lists and what the node needs. */
  readonly reason?: string;
}

const TENSOR_TYPE: Record<DType, string> = { float32: 'tensor(float)', int64: 'tensor(int64)', bool: 'tensor(bool)' };

function rangeText(r: KernelRange): string {
  return r.end === null ? `${r.start}+` : r.start === r.end ? `${r.start}` : `[${r.start}, ${r.end}]`;
}

function covers(r: KernelRange, schema: number): boolean {
  return r.end === null ? schema === r.start : r.start <= schema && schema <= r.end;
}

/** Whether some signature of the op binds every known input and output type to a type the range allows. */
function typesFit(node: TypedNode, kernels: OpKernels, range: KernelRange): string | null {
  let firstProblem: string | null = null;
  for (const sig of kernels.signatures) {
    const ins = sig.filter((p) => p.dir === 'in');
    const outs = sig.filter((p) => p.dir === 'out');
    const bound = new Map<string, string>();
    let problem: string | null = null;
    const check = (param: Param | undefined, type: string | null | undefined, what: string): void => {
      if (problem || type === null || type === undefined) return;
      if (!param) {
        problem = `${what} is not in the signature`;
        return;
      }
      if (param.type.startsWith('tensor(') || param.type.startsWith('seq(')) {
        if (param.type !== type) problem = `${what} '${param.name}' is ${type}, the kernel takes ${param.type}`;
        return;
      }
      const allowed = range.types.get(param.type);
      if (!allowed) {
        problem = `constraint ${param.type} is not listed for ${rangeText(range)}`;
        return;
      }
      if (!allowed.has(type)) {
        problem = `${what} '${param.name}' is ${type}; ${param.type} allows ${[...allowed].join(', ')}`;
        return;
      }
      const prev = bound.get(param.type);
      if (prev && prev !== type) problem = `${param.type} is both ${prev} and ${type}`;
      bound.set(param.type, type);
    };
    // Variadic inputs (Concat, Sum) repeat the last parameter.
    node.inputs.forEach((t, i) => check(ins[Math.min(i, ins.length - 1)], t, `input ${i}`));
    node.outputs.forEach((t, i) => check(outs[i], t, `output ${i}`));
    if (!problem) return null;
    firstProblem ??= problem;
  }
  return firstProblem ?? 'no signature listed';
}

/** Whether `provider` has a kernel for one node at `opset`, and if not, why. */
export function checkNode(tables: KernelTables, provider: Provider, node: TypedNode, opset: number): NodeVerdict {
  const base = { node: node.name, op: node.op, provider };
  const schema = schemaVersion(tables.versions, node.op, opset);
  if (schema === undefined) return { ...base, schema, ok: false, reason: `${node.op} is not an ONNX op at opset ${opset}` };
  const table = tables[provider];
  const kernels = table.ops.get(node.op);
  if (!kernels) return { ...base, schema, ok: false, reason: `${provider} has no ${node.op} kernel at all` };
  const inRange = kernels.ranges.filter((r) => covers(r, schema));
  const listed = kernels.ranges.map(rangeText).join(', ');
  if (inRange.length === 0)
    return { ...base, schema, ok: false, reason: `opset ${opset} means ${node.op}-${schema}; ${provider} registers ${node.op} for ${listed} (an open range N+ covers schema N only)` };
  if (!table.typed) return { ...base, schema, ok: true };
  let problem = '';
  for (const r of inRange) {
    const p = typesFit(node, kernels, r);
    if (p === null) return { ...base, schema, ok: true };
    problem ||= p;
  }
  return { ...base, schema, ok: false, reason: `${node.op}-${schema} on ${provider}: ${problem}` };
}

/** The nodes of a graph built by the DSL, with the types it inferred. */
export function typedNodes(g: Graph): TypedNode[] {
  const typeOf = (name: string): string | undefined => {
    const t = g.types.get(name);
    return t ? TENSOR_TYPE[t.dtype] : undefined;
  };
  return g.nodes.map((n) => ({ name: n.name, op: n.op, inputs: n.inputs.map((i) => (i === '' ? null : typeOf(i))), outputs: n.outputs.map(typeOf) }));
}

/** ONNX TensorProto.DataType code -> the tables' spelling. */
const ELEM_TYPE: Record<number, string> = {
  1: 'tensor(float)', 2: 'tensor(uint8)', 3: 'tensor(int8)', 4: 'tensor(uint16)', 5: 'tensor(int16)', 6: 'tensor(int32)', 7: 'tensor(int64)',
  8: 'tensor(string)', 9: 'tensor(bool)', 10: 'tensor(float16)', 11: 'tensor(double)', 12: 'tensor(uint32)', 13: 'tensor(uint64)', 16: 'tensor(bfloat16)',
};

/** Output types of the ops that do not simply pass their first input's type on. */
function outputTypes(op: string, inputs: readonly (string | null | undefined)[], attrs: Map<string, { i?: unknown; t?: { dataType?: number | null } | null }>, n: number): (string | undefined)[] {
  const first = inputs[0] ?? undefined;
  const all = (t: string | undefined): (string | undefined)[] => Array.from({ length: n }, () => t);
  switch (op) {
    case 'Cast': {
      const to = Number(attrs.get('to')?.i ?? 0);
      return all(ELEM_TYPE[to]);
    }
    case 'Equal': case 'Greater': case 'Less': case 'GreaterOrEqual': case 'LessOrEqual': case 'Not': case 'And': case 'Or': case 'Xor': case 'IsNaN': case 'IsInf':
      return all('tensor(bool)');
    case 'ArgMax': case 'ArgMin': case 'Shape': case 'Size': case 'NonZero':
      return all('tensor(int64)');
    case 'MaxPool': return [first, 'tensor(int64)'].slice(0, n);
    case 'Dropout': return [first, 'tensor(bool)'].slice(0, n);
    case 'OneHot': return all(inputs[2] ?? undefined);
    case 'Where': return all(inputs[1] ?? undefined);
    case 'Constant': case 'ConstantOfShape': {
      const t = attrs.get('value')?.t;
      return all(t ? ELEM_TYPE[t.dataType ?? 1] : op === 'ConstantOfShape' ? 'tensor(float)' : undefined);
    }
    default:
      return all(first);
  }
}

/** The nodes of an ONNX model (bytes or decoded) and its default-domain opset, types from value infos or propagated. */
export function modelNodes(model: Uint8Array | InstanceType<typeof onnx.ModelProto>): { opset: number; nodes: TypedNode[] } {
  const m = model instanceof Uint8Array ? onnx.ModelProto.decode(model) : model;
  const opset = Number(m.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 0);
  const g = m.graph;
  if (!g) throw new Error('the model has no graph');
  const types = new Map<string, string | undefined>();
  const fromInfo = (v: { name?: string | null; type?: { tensorType?: { elemType?: number | null } | null } | null }): void => {
    const code = v.type?.tensorType?.elemType;
    if (v.name && code) types.set(v.name, ELEM_TYPE[code]);
  };
  (g.input ?? []).forEach(fromInfo);
  (g.valueInfo ?? []).forEach(fromInfo);
  (g.output ?? []).forEach(fromInfo);
  for (const t of g.initializer ?? []) if (t.name) types.set(t.name, ELEM_TYPE[t.dataType ?? 0]);
  const nodes: TypedNode[] = [];
  (g.node ?? []).forEach((n, k) => {
    if (n.domain && n.domain !== 'ai.onnx') return;
    const inputs = (n.input ?? []).map((i) => (i === '' ? null : types.get(i)));
    const attrs = new Map((n.attribute ?? []).map((a) => [a.name ?? '', a as { i?: unknown; t?: { dataType?: number | null } | null }]));
    const outNames = n.output ?? [];
    const derived = outputTypes(n.opType ?? '', inputs, attrs, outNames.length);
    const outputs = outNames.map((o, i) => types.get(o) ?? derived[i]);
    outNames.forEach((o, i) => {
      if (!types.has(o)) types.set(o, outputs[i]);
    });
    nodes.push({ name: n.name || `node ${k} (${n.opType})`, op: n.opType ?? '', inputs, outputs });
  });
  return { opset, nodes };
}

/** Verdicts for every node of a DSL graph (written at `opset`) or of an ONNX model (at its own opset). */
export function checkKernels(provider: Provider, what: { graph: Graph; opset: number } | { model: Uint8Array }, tables = loadKernelTables()): NodeVerdict[] {
  const { opset, nodes } = 'graph' in what ? { opset: what.opset, nodes: typedNodes(what.graph) } : modelNodes(what.model);
  // Nodes of one op with the same types get the same answer: decide each kind once (a ResNet has thousands of nodes).
  const seen = new Map<string, NodeVerdict>();
  return nodes.map((n) => {
    const key = `${n.op}|${n.inputs.join(',')}|${n.outputs.join(',')}`;
    let v = seen.get(key);
    if (!v) seen.set(key, (v = checkNode(tables, provider, n, opset)));
    return v.node === n.name ? v : { ...v, node: n.name };
  });
}

/**
 * The nodes without a kernel, for each provider and opset: `missing.get('cuda')!.get(17)` lists the failing
 * verdicts (empty when every node has a kernel). Each kind of node (op and types) is decided once.
 */
export function kernelGaps(graph: Graph, opsets: readonly number[], providers: readonly Provider[] = ['cuda', 'webgpu'], tables = loadKernelTables()): Map<Provider, Map<number, NodeVerdict[]>> {
  const kinds = new Map<string, { node: TypedNode; names: string[] }>();
  for (const n of typedNodes(graph)) {
    const key = `${n.op}|${n.inputs.join(',')}|${n.outputs.join(',')}`;
    const kind = kinds.get(key);
    if (kind) kind.names.push(n.name);
    else kinds.set(key, { node: n, names: [n.name] });
  }
  const out = new Map<Provider, Map<number, NodeVerdict[]>>();
  for (const provider of providers) {
    const byOpset = new Map<number, NodeVerdict[]>();
    for (const opset of opsets) {
      const failing: NodeVerdict[] = [];
      for (const { node, names } of kinds.values()) {
        const v = checkNode(tables, provider, node, opset);
        if (!v.ok) for (const name of names) failing.push({ ...v, node: name });
      }
      byOpset.set(opset, failing);
    }
    out.set(provider, byOpset);
  }
  return out;
}

/** The failing verdicts, grouped by reason: `reason (N nodes, e.g. name)`; empty when every node has a kernel. */
export function summariseMissing(verdicts: readonly NodeVerdict[]): string[] {
  const groups = new Map<string, NodeVerdict[]>();
  for (const v of verdicts) {
    if (v.ok) continue;
    const list = groups.get(v.reason ?? '');
    if (list) list.push(v);
    else groups.set(v.reason ?? '', [v]);
  }
  return [...groups].map(([reason, vs]) => `${reason} (${vs.length} node${vs.length === 1 ? '' : 's'}, e.g. ${vs[0].node})`);
}
