// Small building blocks that gradient rules share: constants, reshapes, and summing a broadcast gradient
// back to its operand's shape.

import type { GraphBuilder, Value } from './builder.js';
import { type Dim, type Shape, floatTensor, int64Tensor, sameDim, shapeText } from './types.js';

export function i64(b: GraphBuilder, values: readonly number[], name = 'const'): Value {
  return b.constant(b.fresh(name), int64Tensor([values.length], values));
}

/** A float32 scalar (rank 0) constant, which broadcasts against anything. */
export function f32(b: GraphBuilder, value: number, name = 'scalar'): Value {
  return b.constant(b.fresh(name), floatTensor([], Float32Array.of(value)));
}

export function concrete(shape: Shape, what: string): number[] {
  return shape.map((d) => {
    if (typeof d !== 'number') throw new Error(`${what} needs a concrete shape, got ${shapeText(shape)} (training graphs are built for a fixed batch and size)`);
    return d;
  });
}

export function reshape(b: GraphBuilder, x: Value, dims: readonly number[], name = 'reshape'): Value {
  return b.op1('Reshape', [x, i64(b, dims, `${name}_shape`)], {}, { name: b.fresh(name) });
}

export function reduceSum(b: GraphBuilder, x: Value, axes: readonly number[], keepdims: boolean, name = 'sum'): Value {
  return b.op1('ReduceSum', [x, i64(b, axes, `${name}_axes`)], { keepdims: keepdims ? 1 : 0 }, { name: b.fresh(name) });
}

export function op(b: GraphBuilder, type: string, inputs: (Value | null)[], attrs: Record<string, number | number[] | string> = {}): Value {
  return b.op1(type, inputs, attrs, { name: b.fresh(type.toLowerCase()) });
}

/** Sums a gradient of the broadcast result shape back to `shape` (the operand's shape before broadcasting). */
export function sumTo(b: GraphBuilder, g: Value, shape: Shape): Value {
  if (g.shape.length === shape.length && g.shape.every((d, i) => sameDim(d, shape[i]))) return g;
  const lead = g.shape.length - shape.length;
  const axes: number[] = [];
  g.shape.forEach((d: Dim, i) => {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && d !== 1) axes.push(i);
  });
  const summed = axes.length ? reduceSum(b, g, axes, true, 'unbroadcast') : g;
  return reshape(b, summed, concrete(shape, 'unbroadcast'), 'unbroadcast');
}

/** Broadcasts `g` up to `shape` explicitly. */
export function expand(b: GraphBuilder, g: Value, shape: Shape): Value {
  return b.op1('Expand', [g, i64(b, concrete(shape, 'expand'), 'expand_shape')], {}, { name: b.fresh('expand') });
}

/**
 * One-hot rows [N, classes] (float 0/1) of int64 labels [N], by comparing float class numbers: the labels become
 * floats by a Gather from [0, 1, ..., classes-1], then Equal against that row. No int64 arithmetic (onnxruntime's
 * WebGPU kernels take float or int32 operands) and no OneHot op (onnxruntime's WebGPU provider has none).
 */
export function oneHot(b: GraphBuilder, labels: Value, classes: number): Value {
  const ids = Float32Array.from({ length: classes }, (_, i) => i);
  const column = b.constant(b.fresh('class_ids'), floatTensor([classes, 1], ids));
  const row = b.constant(b.fresh('class_row'), floatTensor([1, classes], ids));
  const asFloat = b.op1('Gather', [column, labels], { axis: 0 }, { name: b.fresh('label_ids') });
  const equal = b.op1('Equal', [asFloat, row], {}, { name: b.fresh('is_label') });
  return b.op1('Cast', [equal], { to: 1 }, { name: b.fresh('onehot') });
}
