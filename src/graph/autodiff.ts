// Reverse-mode differentiation: a walk over the nodes in reverse order, calling each op's gradient rule
// (src/graph/ops.ts) and summing the contributions that reach each value.

import { type GraphBuilder, GraphError, type Value } from './builder.js';
import { AttrReader, OPS } from './ops.js';
import { floatTensor } from './types.js';

/**
 * Emits into `b` the gradients of the scalar `loss` with respect to each of `wrt`. Returns them by name, in the
 * order of `wrt`; a value that the loss does not depend on gets an explicit zero tensor.
 */
export function gradients(b: GraphBuilder, loss: Value, wrt: readonly Value[]): Value[] {
  if (loss.shape.length !== 0) throw new GraphError(loss.name, `the loss must be a scalar, got shape [${loss.shape.join(', ')}]`);
  // A composite op is differentiated by its own rule; the standard ops that spell it (its expansion) are not.
  const forward = b.nodeList.filter((n) => !n.expansionOf);

  // Values that depend on something we differentiate with respect to: only those need gradients.
  const live = new Set(wrt.map((w) => w.name));
  for (const n of forward) if (n.inputs.some((i) => live.has(i))) for (const o of n.outputs) live.add(o);

  const pending = new Map<string, Value[]>();
  const total = new Map<string, Value>();
  const add = (name: string, g: Value): void => {
    const list = pending.get(name);
    if (list) list.push(g);
    else pending.set(name, [g]);
  };
  const sum = (name: string): Value | null => {
    const done = total.get(name);
    if (done) return done;
    const list = pending.get(name);
    if (!list) return null;
    const g = list.reduce((acc, v) => b.op1('Add', [acc, v], {}, { name: b.fresh('acc') }));
    total.set(name, g);
    return g;
  };

  b.scope('grad', () => {
    add(loss.name, b.constant(b.fresh('seed'), floatTensor([], Float32Array.of(1))));
    for (let k = forward.length - 1; k >= 0; k--) {
      const node = forward[k];
      if (!node.outputs.some((o) => pending.has(o))) continue;
      const need = node.inputs.map((i) => i !== '' && live.has(i) && b.value(i).dtype === 'float32');
      if (!need.some(Boolean)) continue;
      const def = OPS[node.op];
      if (!def.grad) throw new GraphError(node.name, `${node.op} has no gradient rule, but the loss depends on it through its inputs`);
      const dOut = node.outputs.map((o) => sum(o));
      const inputs = node.inputs.map((i) => (i === '' ? null : b.value(i)));
      const outputs = node.outputs.map((o) => b.value(o));
      let grads: (Value | null)[];
      try {
        grads = b.scope(node.name, () => def.grad!({ b, inputs, outputs, dOut, attrs: new AttrReader(node.attrs), need, hint: node.gradHint }));
      } catch (e) {
        if (e instanceof GraphError) throw e;
        throw new GraphError(`grad.${node.name}`, `${node.op}: ${(e as Error).message}`);
      }
      grads.forEach((g, i) => {
        if (g && need[i]) add(node.inputs[i], g);
      });
    }
  });

  return wrt.map((w) => {
    const g = sum(w.name);
    if (g) return g;
    const zeros = new Float32Array(w.shape.reduce<number>((p, d) => p * (d as number), 1));
    return b.constant(b.fresh(`${w.name}.zero_grad`), floatTensor(w.shape as number[], zeros));
  });
}
