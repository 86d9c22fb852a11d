// The graph IR the DSL builds and the passes transform: nodes, typed values, parameters with their data.

import type { Attrs } from './ops.js';
import type { TensorData, TensorType } from './types.js';

export interface Node {
  readonly op: string;
  /** Scope path of the layer that built it, e.g. `stage3.unit12.conv2`; unique in a graph. */
  readonly name: string;
  /** Value names; '' marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attrs: Attrs;
  /**
   * Not written to ONNX. 'batch-statistics' on a BatchNormalization whose mean and variance inputs are its own
   * input's batch statistics: differentiate it as training-mode BN (closed form), not through the statistics.
   */
  readonly gradHint?: 'batch-statistics';
  /**
   * Not written to ONNX. A composite node is differentiated as one op (its gradient rule) but written as the
   * standard ops that spell it (its expansion, see OpDef.expand in ops.ts), which are emitted before it and carry
   * `expansionOf`: autodiff differentiates the composite and skips its expansion; build() drops the composite.
   */
  readonly composite?: true;
  readonly expansionOf?: string;
}

export interface ValueInfo extends TensorType {
  readonly name: string;
}

/**
 * What a stored tensor is for. `param`s are learned (and counted as parameters); `buffer`s are state that is
 * not learned by gradient (BN running statistics); both are saved in checkpoints. `constant`s are fixed by
 * the architecture (Pad's pads, a scaling lambda) and are not.
 */
export type TensorRole = 'param' | 'buffer' | 'constant';

export interface Initializer {
  readonly name: string;
  readonly role: TensorRole;
  /** Whether weight decay applies by default (conv and FC weights: yes; BN affine and biases: no). */
  readonly decay: boolean;
  readonly data: TensorData;
}

export interface Graph {
  readonly name: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  readonly nodes: readonly Node[];
  /** Named tensors stored in the model file, in creation order. */
  readonly initializers: readonly Initializer[];
  /** Types of every value (inputs, node outputs, initializers), as inferred when the graph was built. */
  readonly types: ReadonlyMap<string, TensorType>;
  /**
   * Training graphs only: tensors that are graph inputs carrying state (parameters, optimiser state, BN running
   * statistics), with their initial values. A training loop starts from these and feeds each step's outputs
   * back (see src/export/training.ts for the naming).
   */
  readonly state?: readonly Initializer[];
}

/** Number of learnable scalars: the parameter count the paper and the SPEC report. */
export function parameterCount(g: Graph): number {
  let n = 0;
  for (const init of g.initializers) if (init.role === 'param') n += init.data.dims.reduce((p, d) => p * d, 1);
  return n;
}

/** Map from value name to the nodes that read it. */
export function consumers(g: Graph): Map<string, Node[]> {
  const m = new Map<string, Node[]>();
  for (const node of g.nodes) {
    for (const input of node.inputs) {
      if (!input) continue;
      const list = m.get(input);
      if (list) list.push(node);
      else m.set(input, [node]);
    }
  }
  return m;
}

export function producers(g: Graph): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const node of g.nodes) for (const out of node.outputs) m.set(out, node);
  return m;
}
