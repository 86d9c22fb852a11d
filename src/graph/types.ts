// Tensor types of the graph DSL: element types and (possibly symbolic) shapes.

export type DType = 'float32' | 'int64' | 'bool';

/** ONNX TensorProto.DataType codes. */
export const ONNX_DTYPE: Record<DType, number> = { float32: 1, int64: 7, bool: 9 };

/**
 * A symbolic dimension such as N, H or an expression derived from them (e.g. floor((H+2*3-7)/2)+1).
 * `text` is what users see in errors and what ONNX gets as dim_param; `at` evaluates the dimension for
 * concrete values of the free symbols, which is how two symbolic dims are compared (see sameDim).
 */
export interface SymDim {
  readonly text: string;
  readonly at: (env: (symbol: string) => number) => number;
}

export type Dim = number | SymDim;
export type Shape = readonly Dim[];

export interface TensorType {
  readonly dtype: DType;
  readonly shape: Shape;
}

export function sym(name: string): SymDim {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`symbolic dimension name '${name}' must be an identifier`);
  return { text: name, at: (env) => env(name) };
}

export function isSym(d: Dim): d is SymDim {
  return typeof d !== 'number';
}

/** Apply a function to a dim: stays a number when the input is one, else becomes a derived symbol. */
export function mapDim(d: Dim, fn: (x: number) => number, text: (inner: string) => string): Dim {
  if (typeof d === 'number') return fn(d);
  return { text: text(d.text), at: (env) => fn(d.at(env)) };
}

// Sample assignments used to decide whether two symbolic dims are the same expression. Values are large and
// of mixed parity so that every (floor/ceil) spatial formula the family uses is exercised on both branches.
const SAMPLE_BASES = [224, 320, 97, 33, 256, 481, 64];
function sampleEnv(k: number): (symbol: string) => number {
  return (symbol) => {
    let h = 0;
    for (let i = 0; i < symbol.length; i++) h = (h * 31 + symbol.charCodeAt(i)) >>> 0;
    return SAMPLE_BASES[k] + (h % 29);
  };
}

export function sameDim(a: Dim, b: Dim): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (typeof a === 'number' || typeof b === 'number') return false;
  if (a.text === b.text) return true;
  for (let k = 0; k < SAMPLE_BASES.length; k++) {
    const env = sampleEnv(k);
    if (a.at(env) !== b.at(env)) return false;
  }
  return true;
}

export function dimText(d: Dim): string {
  return typeof d === 'number' ? String(d) : d.text;
}

export function shapeText(s: Shape): string {
  return `[${s.map(dimText).join(', ')}]`;
}

export function typeText(t: TensorType): string {
  return `${t.dtype}${shapeText(t.shape)}`;
}

/** Number of elements of a fully concrete shape. */
export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number') throw new Error(`shape ${shapeText(shape)} is symbolic; a concrete shape is needed here`);
    n *= d;
  }
  return n;
}

export function concreteShape(shape: Shape, env: Record<string, number>): number[] {
  return shape.map((d) => {
    if (typeof d === 'number') return d;
    return d.at((s) => {
      const v = env[s];
      if (v === undefined) throw new Error(`no value given for symbolic dimension '${s}'`);
      return v;
    });
  });
}

/** A tensor with data, e.g. a parameter's initial value or a constant. Data may be produced lazily. */
export interface TensorData {
  readonly dtype: DType;
  readonly dims: readonly number[];
  /** Produces the values; called when the tensor is written or evaluated, possibly more than once. */
  readonly values: () => Float32Array | BigInt64Array | Uint8Array;
}

export function floatTensor(dims: readonly number[], values: Float32Array | (() => Float32Array)): TensorData {
  const fn = typeof values === 'function' ? values : () => values;
  return { dtype: 'float32', dims: [...dims], values: fn };
}

export function int64Tensor(dims: readonly number[], values: readonly number[]): TensorData {
  const data = BigInt64Array.from(values.map((v) => BigInt(v)));
  return { dtype: 'int64', dims: [...dims], values: () => data };
}
