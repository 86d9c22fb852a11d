// onnxruntime execution providers for `train --ep` and `serve --ep`: a session on a GPU provider either starts
// on it or the command refuses (no silent CPU fallback), and where onnxruntime places single nodes on the CPU
// anyway, the placement is read from the session's own profile and said at start.

import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';

export const EXECUTION_PROVIDERS = ['cpu', 'cuda', 'webgpu'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

/** onnxruntime's own name of each provider, as its logs and profiles spell it. */
export const PROVIDER_NAMES: Readonly<Record<ExecutionProvider, string>> = {
  cpu: 'CPUExecutionProvider',
  cuda: 'CUDAExecutionProvider',
  webgpu: 'WebGpuExecutionProvider',
};

const LABELS: Readonly<Record<ExecutionProvider, string>> = { cpu: 'CPU', cuda: 'CUDA', webgpu: 'WebGPU' };

/** What a user does when a provider cannot start (the README's GPU section says more). */
export const PROVIDER_HINTS: Readonly<Record<Exclude<ExecutionProvider, 'cpu'>, string>> = {
  cuda:
    "onnxruntime-node's CUDA provider is a separate download that this project's `npm ci` skips. Install it with " +
    '`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js` (fetches ' +
    'libonnxruntime_providers_cuda.so from NuGet into onnxruntime-node), on a machine with an NVIDIA GPU and driver, CUDA 12 and cuDNN 9; ' +
    "see the README's GPU section, or use --ep cpu",
  webgpu:
    "onnxruntime-node's WebGPU provider (bundled) needs a GPU with a Vulkan driver (software Vulkan such as Mesa's lavapipe is " +
    "refused); see the README's GPU section, or use --ep cpu",
};

/** A GPU provider was asked for and cannot run the session: the command refuses to start (exit 1). */
export class ProviderError extends Error {
  override name = 'ProviderError';
}

export function isExecutionProvider(v: string): v is ExecutionProvider {
  return (EXECUTION_PROVIDERS as readonly string[]).includes(v);
}

/** Nodes that ran on each provider, by op type: { CUDAExecutionProvider: { Conv: 35, ... }, ... }. */
export type Placement = Record<string, Record<string, number>>;

export interface ProviderSession {
  session: ort.InferenceSession;
  /**
   * For a GPU provider when asked: ends the profile of the runs made so far (run the session once first) and
   * returns where its nodes ran; refuses (ProviderError) if the GPU provider ran none of them.
   */
  placement?: () => Placement;
}

/**
 * Creates a session on `ep`. A GPU provider that cannot be created (missing library, no device, no adapter) is a
 * ProviderError naming it and how to install it; the CPU provider's errors pass through as they are.
 * With `placement`, a GPU session profiles its runs until `placement()` is called (see ProviderSession).
 */
export async function createProviderSession(
  model: string | Uint8Array,
  ep: ExecutionProvider,
  options: ort.InferenceSession.SessionOptions = {},
  placement = false,
): Promise<ProviderSession> {
  if (ep === 'cpu') {
    const opts = { ...options, executionProviders: ['cpu'] };
    return { session: typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts) };
  }
  const profileDir = placement ? mkdtempSync(join(tmpdir(), 'resnet-onnx-placement-')) : undefined;
  const opts: ort.InferenceSession.SessionOptions = {
    ...options,
    executionProviders: [ep],
    ...(profileDir ? { enableProfiling: true, profileFilePrefix: join(profileDir, 'profile') } : {}),
  };
  let session: ort.InferenceSession;
  try {
    session = typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  } catch (e) {
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    // onnxruntime's message without its source location and failed assertion, when it has them.
    const said = (e as Error).message
      .split('\n')[0]
      .trim()
      .replace(/^\/onnxruntime_src\/\S+:\d+ (.*? was false\. )?/, '');
    throw new ProviderError(`cannot start onnxruntime's ${LABELS[ep]} execution provider (--ep ${ep}): ${said}. ${PROVIDER_HINTS[ep]}`);
  }
  if (!profileDir) return { session };
  return {
    session,
    placement: () => {
      try {
        session.endProfiling();
        const file = readdirSync(profileDir).find((f) => f.endsWith('.json'));
        if (!file) throw new ProviderError(`--ep ${ep}: onnxruntime wrote no profile, so where the nodes ran is unknown`);
        const p = placementFromProfile(readFileSync(join(profileDir, file), 'utf8'));
        checkPlacement(p, ep);
        return p;
      } finally {
        rmSync(profileDir, { recursive: true, force: true });
      }
    },
  };
}

interface ProfileEvent {
  cat?: string;
  name?: string;
  args?: { op_name?: string; provider?: string };
}

/** The nodes of an onnxruntime profile (its JSON trace) by provider and op type: one count per node run. */
export function placementFromProfile(json: string): Placement {
  const events = JSON.parse(json) as ProfileEvent[];
  const p: Placement = {};
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.provider || !e.args.op_name) continue;
    const ops = (p[e.args.provider] ??= {});
    ops[e.args.op_name] = (ops[e.args.op_name] ?? 0) + 1;
  }
  return p;
}

function total(ops: Record<string, number> | undefined): number {
  return Object.values(ops ?? {}).reduce((a, b) => a + b, 0);
}

/** Refuses a GPU session whose provider ran none of the nodes: that would be CPU training under a GPU flag. */
export function checkPlacement(p: Placement, ep: ExecutionProvider): void {
  if (ep === 'cpu') return;
  const gpu = PROVIDER_NAMES[ep];
  if (total(p[gpu]) === 0) {
    const where = Object.entries(p).map(([name, ops]) => `${name} ${total(ops)}`).join(', ') || 'nowhere';
    throw new ProviderError(`--ep ${ep}: onnxruntime created the ${LABELS[ep]} provider but ran no node on it (nodes ran on: ${where}); refusing to run on the CPU instead. ${PROVIDER_HINTS[ep]}`);
  }
}

/**
 * One line for the start of a run: which provider took each op type, the GPU's first, e.g.
 * `--ep cuda: CUDAExecutionProvider ran 1532 nodes (Add 212, Conv 35, ...); CPUExecutionProvider ran 4 (Shape 4)`.
 */
export function describePlacement(p: Placement, ep: ExecutionProvider): string {
  const gpu = PROVIDER_NAMES[ep];
  const names = Object.keys(p).sort((a, b) => (a === gpu ? -1 : b === gpu ? 1 : a.localeCompare(b)));
  const parts = names.map((name) => {
    const ops = Object.entries(p[name]).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    return `${name} ran ${total(p[name])} node${total(p[name]) === 1 ? '' : 's'} (${ops.map(([op, n]) => `${op} ${n}`).join(', ')})`;
  });
  const fallback = names.filter((n) => n !== gpu).flatMap((n) => Object.keys(p[n]));
  const note = ep !== 'cpu' && fallback.length ? `; not on ${LABELS[ep]}: ${[...new Set(fallback)].sort().join(', ')}` : '';
  return `--ep ${ep}: ${parts.join('; ')}${note}`;
}
