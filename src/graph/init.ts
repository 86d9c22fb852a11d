// Parameter initialisers. Each parameter draws from its own stream, seeded by (seed, parameter name), so a
// parameter's initial value depends only on the seed and its name, not on build order or on other layers.

export type Init =
  | { kind: 'he-normal'; fanOut: number } // He et al. 2015 as in the authors' Torch code: N(0, sqrt(2 / (k*k*out)))
  | { kind: 'uniform'; bound: number } // U(-bound, bound): Torch's default for Linear
  | { kind: 'constant'; value: number };

function hashString(seed: number, s: string): number {
  // FNV-1a over the name, mixed with the seed.
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** sfc32: a small, fast, well-tested 32-bit generator. Returns uniform floats in [0, 1). */
export function rng(seed: number, stream: string): () => number {
  let a = hashString(seed, stream);
  let b = hashString(seed ^ 0x9e3779b9, stream);
  let c = hashString(seed ^ 0x85ebca6b, stream);
  let d = 1;
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

export function initValues(init: Init, count: number, seed: number, name: string): Float32Array {
  const out = new Float32Array(count);
  if (init.kind === 'constant') {
    out.fill(init.value);
    return out;
  }
  const u = rng(seed, name);
  if (init.kind === 'uniform') {
    for (let i = 0; i < count; i++) out[i] = (2 * u() - 1) * init.bound;
    return out;
  }
  const std = Math.sqrt(2 / init.fanOut);
  for (let i = 0; i < count; i += 2) {
    // Box-Muller: two normals per pair of uniforms.
    const r = Math.sqrt(-2 * Math.log(1 - u())) * std;
    const t = 2 * Math.PI * u();
    out[i] = r * Math.cos(t);
    if (i + 1 < count) out[i + 1] = r * Math.sin(t);
  }
  return out;
}
