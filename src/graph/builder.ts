// The one funnel through which every node, parameter and input of a graph is created: naming by scope,
// attribute checking and shape inference happen here, so a mistake throws at the call that made it.

import type { Graph, Initializer, Node, TensorRole, ValueInfo } from './graph.js';
import { type Init, initValues } from './init.js';
import { type Attr, type InputInfo, type OpDef, type RawAttr, AttrReader, OPS } from './ops.js';
import { type DType, type Shape, type TensorData, type TensorType, sameDim, shapeText } from './types.js';

/** A handle to a value in the graph under construction. Immutable; carries its inferred type. */
export class Value implements TensorType {
  constructor(
    readonly name: string,
    readonly dtype: DType,
    readonly shape: Shape,
    /** Set when the value is a constant known at build time (used for shape inference of Reshape, Pad...). */
    readonly constant?: TensorData,
  ) {}
  toString(): string {
    return `${this.name}: ${this.dtype}${shapeText(this.shape)}`;
  }
}

export class GraphError extends Error {
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
    this.name = 'GraphError';
  }
}

export interface OpOptions {
  /** Local name of the node within the current scope; defaults to the op type in lower case. */
  name?: string;
  /** Number of outputs, or their local names (value names become `<node>.<output>`). */
  outputs?: number | readonly string[];
  /** Name the (single) output value this exact global name instead of the node's name. */
  outputName?: string;
  /** See Node.gradHint. */
  gradHint?: Node['gradHint'];
}

export interface ParamOptions {
  role?: TensorRole;
  decay?: boolean;
}

/**
 * What will run the graph. 'any': every ONNX runtime and execution provider we know of takes its ops.
 * 'onnxruntime-cpu': layers may use a faster spelling that onnxruntime's CPU provider runs but other providers
 * reject (training-mode BatchNormalization, which onnxruntime's CUDA and ROCm providers refuse at opset >= 14).
 */
export type BuildTarget = 'any' | 'onnxruntime-cpu';

export class GraphBuilder {
  private readonly scopes: string[] = [];
  private readonly nodes: Node[] = [];
  private readonly inits: Initializer[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly types = new Map<string, TensorType>();
  private readonly constants = new Map<string, TensorData>();
  private readonly nodeNames = new Set<string>();
  /** Value name -> indices in `nodes` of the nodes that output it (a composite's and its expansion's). */
  private readonly producedBy = new Map<string, number[]>();
  /** Value name -> how many node inputs read it. */
  private readonly readCount = new Map<string, number>();
  private readonly autoNames = new Map<string, number>();

  private readonly stateInits: Initializer[] = [];

  /**
   * `mode` 'training' makes parameters and buffers graph inputs (state fed each step) instead of stored
   * initializers, and makes layers such as batchNorm use batch statistics. `target`: see BuildTarget.
   */
  constructor(
    readonly name: string,
    readonly seed = 0,
    readonly mode: 'inference' | 'training' = 'inference',
    readonly target: BuildTarget = 'any',
  ) {}

  get training(): boolean {
    return this.mode === 'training';
  }

  /** Every node added so far, in order (read by autodiff). */
  get nodeList(): readonly Node[] {
    return this.nodes;
  }

  /** A handle to an existing value by name. */
  value(name: string): Value {
    const t = this.types.get(name);
    if (!t) throw new GraphError(name, 'no such value in this graph');
    return new Value(name, t.dtype, t.shape, this.constants.get(name));
  }

  private readonly updates = new Map<string, Value>();

  /** Records the next value of a state tensor (e.g. a BN running statistic) computed by this graph. */
  stateUpdate(name: string, next: Value): void {
    if (this.updates.has(name)) throw new GraphError(name, 'state tensor updated twice');
    this.updates.set(name, next);
  }

  /** State updates recorded so far, by state tensor name. */
  get stateUpdates(): ReadonlyMap<string, Value> {
    return this.updates;
  }

  /** State tensors registered so far (training mode). */
  get stateList(): readonly Initializer[] {
    return this.stateInits;
  }

  /** Current scope path, e.g. `stage2.unit1`. */
  get path(): string {
    return this.scopes.join('.');
  }

  /** Runs `fn` with `name` appended to the scope path; names created inside are prefixed with it. */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  private qualify(local: string): string {
    return this.scopes.length ? `${this.path}.${local}` : local;
  }

  private fail(what: string, message: string): never {
    throw new GraphError(what, message);
  }

  private claim(name: string): void {
    if (this.types.has(name) || this.nodeNames.has(name)) this.fail(name, 'this name is already used in the graph');
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    this.claim(name);
    this.inputs.push({ name, dtype, shape });
    this.types.set(name, { dtype, shape });
    return new Value(name, dtype, shape);
  }

  /** Marks `v` as a graph output; `name` renames it (e.g. 'logits') when it was made by this builder. */
  output(v: Value, name = v.name): Value {
    let out = v;
    if (name !== v.name) {
      const made = this.producedBy.get(v.name) ?? [];
      const read = (this.readCount.get(v.name) ?? 0) > 0;
      if (made.length === 0 || read) {
        out = this.op('Identity', [v], {}, { name, outputName: name })[0];
      } else {
        this.claim(name);
        // A composite's output is also its expansion's: rename it in both.
        for (const k of made) this.nodes[k] = { ...this.nodes[k], outputs: this.nodes[k].outputs.map((o) => (o === v.name ? name : o)) };
        this.producedBy.delete(v.name);
        this.producedBy.set(name, made);
        this.types.delete(v.name);
        this.types.set(name, { dtype: v.dtype, shape: v.shape });
        out = new Value(name, v.dtype, v.shape);
      }
    }
    this.outputs.push({ name: out.name, dtype: out.dtype, shape: out.shape });
    return out;
  }

  /** Registers a stored tensor under the current scope (`<scope>.<local>`) with its initial values. */
  param(local: string, dims: readonly number[], init: Init, opts: ParamOptions = {}): Value {
    const name = this.qualify(local);
    const count = dims.reduce((p, d) => p * d, 1);
    const seed = this.seed;
    const data: TensorData = { dtype: 'float32', dims: [...dims], values: () => initValues(init, count, seed, name) };
    if (this.training) {
      this.stateInits.push({ name, role: opts.role ?? 'param', decay: opts.decay ?? false, data });
      return this.input(name, 'float32', dims);
    }
    return this.tensor(name, data, opts.role ?? 'param', opts.decay ?? false);
  }

  /** A constant tensor stored in the model (e.g. Pad's pads); its value is known to shape inference. */
  constant(local: string, data: TensorData): Value {
    const name = this.qualify(local);
    const v = this.tensor(name, data, 'constant', false);
    this.constants.set(name, data);
    return new Value(name, v.dtype, v.shape, data);
  }

  private tensor(name: string, data: TensorData, role: TensorRole, decay: boolean): Value {
    this.claim(name);
    this.inits.push({ name, role, decay, data });
    this.types.set(name, { dtype: data.dtype, shape: data.dims });
    return new Value(name, data.dtype, data.dims);
  }

  /** Adds one node. Checks the op's attributes and input types, infers output types, returns the outputs. */
  op(type: string, inputs: readonly (Value | null)[], rawAttrs: Readonly<Record<string, RawAttr>> = {}, opts: OpOptions = {}): Value[] {
    const local = opts.name ?? this.autoName(type);
    const nodeName = this.qualify(local);
    const def = OPS[type];
    if (!def) this.fail(nodeName, `unknown op '${type}' (known: ${Object.keys(OPS).join(', ')})`);
    if (this.nodeNames.has(nodeName)) this.fail(nodeName, `a layer named '${nodeName}' already exists`);
    if (inputs.length < def.inputs[0] || inputs.length > def.inputs[1])
      this.fail(nodeName, `${type} takes ${def.inputs[0]}..${def.inputs[1]} inputs, got ${inputs.length}`);
    const attrs: Record<string, Attr> = {};
    for (const [key, raw] of Object.entries(rawAttrs)) {
      const kind = def.attrs[key];
      if (!kind) this.fail(nodeName, `${type} has no attribute '${key}' (allowed: ${Object.keys(def.attrs).join(', ') || 'none'})`);
      attrs[key] = toAttr(kind, raw, () => this.fail(nodeName, `attribute '${key}' of ${type} must be of kind ${kind}, got ${JSON.stringify(raw)}`));
    }
    const infos: (InputInfo | null)[] = inputs.map((v) => {
      if (v === null) return null;
      const t = this.types.get(v.name);
      if (!t) this.fail(nodeName, `input '${v.name}' does not belong to this graph`);
      return { dtype: t.dtype, shape: t.shape, constant: this.constants.get(v.name) };
    });
    let outTypes: TensorType[];
    try {
      outTypes = def.infer(infos, new AttrReader(attrs));
    } catch (e) {
      const inputsText = inputs.map((v) => (v ? v.toString() : '-')).join(', ');
      return this.fail(nodeName, `${type}: ${(e as Error).message} (inputs: ${inputsText})`);
    }
    const outLocal = typeof opts.outputs === 'object' ? opts.outputs : undefined;
    const nOut = outLocal ? outLocal.length : (opts.outputs as number | undefined) ?? outTypes.length;
    if (nOut > outTypes.length) this.fail(nodeName, `${type} has ${outTypes.length} outputs here, ${nOut} requested`);
    const outNames = Array.from({ length: nOut }, (_, i) =>
      opts.outputName && nOut === 1 ? opts.outputName : outLocal ? `${nodeName}.${outLocal[i]}` : nOut === 1 ? nodeName : `${nodeName}.${i}`,
    );
    if (def.expand) {
      const expanded = this.expandComposite(type, def, nodeName, local, inputs, attrs, outNames, outTypes, opts);
      if (expanded) return expanded;
    }
    for (const n of outNames) if (n !== nodeName) this.claim(n);
    if (outNames.includes(nodeName)) this.claim(nodeName);
    this.nodeNames.add(nodeName);
    this.push({ op: type, name: nodeName, inputs: inputs.map((v) => (v ? v.name : '')), outputs: outNames, attrs, ...(opts.gradHint ? { gradHint: opts.gradHint } : {}) });
    return outNames.map((n, i) => {
      this.types.set(n, outTypes[i]);
      return new Value(n, outTypes[i].dtype, outTypes[i].shape);
    });
  }

  /**
   * Emits the expansion of a composite op (OpDef.expand) under the node's scope, then records the composite node
   * itself, which autodiff differentiates and build() drops. Returns null when the op is written as itself here.
   */
  private expandComposite(
    type: string,
    def: OpDef,
    nodeName: string,
    local: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, Attr>,
    outNames: readonly string[],
    outTypes: readonly TensorType[],
    opts: OpOptions,
  ): Value[] | null {
    const start = this.nodes.length;
    const values = this.scope(local, () => def.expand!({ b: this, inputs, attrs: new AttrReader(attrs), outputs: outNames }));
    if (!values) {
      if (this.nodes.length !== start) this.fail(nodeName, `${type}: an expansion that declines must not emit nodes`);
      return null;
    }
    if (values.length !== outNames.length) this.fail(nodeName, `${type}: expansion made ${values.length} outputs, ${outNames.length} expected`);
    values.forEach((v, i) => {
      const t = outTypes[i];
      if (v.name !== outNames[i] || v.dtype !== t.dtype || v.shape.length !== t.shape.length || !v.shape.every((d, k) => sameDim(d, t.shape[k])))
        this.fail(nodeName, `${type}: expansion output ${i} is ${v}, expected ${outNames[i]}: ${t.dtype}${shapeText(t.shape)}`);
    });
    for (let k = start; k < this.nodes.length; k++) if (!this.nodes[k].expansionOf) this.nodes[k] = { ...this.nodes[k], expansionOf: nodeName };
    this.nodeNames.add(nodeName);
    this.push({ op: type, name: nodeName, inputs: inputs.map((v) => (v ? v.name : '')), outputs: [...outNames], attrs, composite: true, ...(opts.gradHint ? { gradHint: opts.gradHint } : {}) });
    return values;
  }

  private push(node: Node): void {
    const k = this.nodes.length;
    this.nodes.push(node);
    for (const o of node.outputs) {
      const list = this.producedBy.get(o);
      if (list) list.push(k);
      else this.producedBy.set(o, [k]);
    }
    for (const i of node.inputs) if (i) this.readCount.set(i, (this.readCount.get(i) ?? 0) + 1);
  }

  /** Single-output shorthand for op(). */
  op1(type: string, inputs: readonly (Value | null)[], attrs: Readonly<Record<string, RawAttr>> = {}, opts: OpOptions = {}): Value {
    return this.op(type, inputs, attrs, { ...opts, outputs: 1 })[0];
  }

  /** A local name not yet used in the current scope: `base`, then `base_1`, `base_2`... */
  fresh(base: string): string {
    return this.autoName(base);
  }

  private autoName(type: string): string {
    const base = type.toLowerCase();
    const key = this.qualify(base);
    const k = this.autoNames.get(key) ?? 0;
    this.autoNames.set(key, k + 1);
    return k === 0 ? base : `${base}_${k}`;
  }

  build(): Graph {
    if (this.outputs.length === 0) throw new GraphError(this.name, 'graph has no outputs');
    return {
      name: this.name,
      inputs: [...this.inputs],
      outputs: [...this.outputs],
      nodes: this.nodes.filter((n) => !n.composite).map(({ expansionOf: _, composite: __, ...n }) => n),
      initializers: [...this.inits],
      types: new Map(this.types),
      ...(this.training ? { state: [...this.stateInits] } : {}),
    };
  }
}

function toAttr(kind: Attr['kind'], raw: RawAttr, bad: () => never): Attr {
  switch (kind) {
    case 'int':
      if (typeof raw !== 'number' || !Number.isInteger(raw)) bad();
      return { kind, value: raw };
    case 'float':
      if (typeof raw !== 'number') bad();
      return { kind, value: raw };
    case 'ints':
      if (!Array.isArray(raw) || !raw.every((x) => Number.isInteger(x))) bad();
      return { kind, value: [...(raw as number[])] };
    case 'floats':
      if (!Array.isArray(raw) || !raw.every((x) => typeof x === 'number')) bad();
      return { kind, value: [...(raw as number[])] };
    case 'string':
      if (typeof raw !== 'string') bad();
      return { kind, value: raw };
    case 'tensor':
      if (typeof raw !== 'object' || Array.isArray(raw) || !('dims' in (raw as object))) bad();
      return { kind, value: raw as TensorData };
  }
}
