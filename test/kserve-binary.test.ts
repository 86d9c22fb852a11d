// The KServe v2 / Triton binary tensor data extension, both ways, against a client written here from the
// protocol's text (kserve/open-inference-protocol, "Binary Tensor Data Extension"; Triton's
// docs/protocol/extension_binary_data.md), not with the server's own helpers: the body is a JSON header of
// `Inference-Header-Content-Length` bytes, then each binary tensor's raw little-endian bytes in order, sized by
// its `parameters.binary_data_size`. The numbers must be those of JSON inference and of onnxruntime run directly.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { type RunningServer, startServer } from '../src/serve/server.js';
import { relDiff, runOnnx, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-kserve-bin-');
const model = join(dir, 'tiny.onnx');
const MAX_BODY = 1024 * 1024;
let server: RunningServer;
let infer: string;

beforeAll(async () => {
  // Two outputs (logits and probabilities), so binary and JSON outputs can be mixed in one response.
  exportInference(resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'basic' }), { output: model, probabilities: true });
  server = await startServer({ model, port: 0, logLevel: 'silent', maxJsonBytes: MAX_BODY });
  await server.ready;
  infer = `${server.url}/v2/models/tiny/infer`;
});

afterAll(async () => {
  await server?.close();
});

// --- The client: bytes built by hand, as the protocol describes them. ---

function float32LE(x: Float32Array): Uint8Array {
  const out = new Uint8Array(4 * x.length);
  const view = new DataView(out.buffer);
  for (let i = 0; i < x.length; i++) view.setFloat32(4 * i, x[i], true);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A request: the JSON header, then `tail` (the binary tensors); the header length unless `headerLength` overrides it. */
function binaryBody(header: object, tail: Uint8Array, headerLength?: number): { body: Uint8Array<ArrayBuffer>; headers: Record<string, string> } {
  const json = new TextEncoder().encode(JSON.stringify(header));
  return { body: concat(json, tail), headers: { 'Inference-Header-Content-Length': String(headerLength ?? json.length) } };
}

interface V2Output {
  name: string;
  datatype: string;
  shape: number[];
  data?: number[];
  parameters?: { binary_data_size?: number };
}

/** Reads a response: JSON, or the JSON header plus binary outputs; returns each output's values as float32. */
async function readResponse(res: Response): Promise<{ status: number; type: string; header: { outputs: V2Output[]; error?: string }; values: Record<string, Float32Array>; headerLength: string | null }> {
  const bytes = new Uint8Array(await res.arrayBuffer());
  const headerLength = res.headers.get('inference-header-content-length');
  const n = headerLength === null ? bytes.length : Number(headerLength);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, n))) as { outputs: V2Output[]; error?: string };
  const values: Record<string, Float32Array> = {};
  let at = n;
  for (const o of header.outputs ?? []) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) {
      values[o.name] = Float32Array.from(o.data ?? []);
      continue;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset + at, size);
    values[o.name] = Float32Array.from({ length: size / 4 }, (_, i) => view.getFloat32(4 * i, true));
    at += size;
  }
  expect(at, 'every byte after the header belongs to a binary output').toBe(bytes.length);
  return { status: res.status, type: res.headers.get('content-type') ?? '', header, values, headerLength };
}

const N = 2;
const SHAPE = [N, 3, 64, 64];
const x = Float32Array.from({ length: N * 3 * 64 * 64 }, (_, i) => Math.sin(i * 0.37) * 1.7);

async function jsonInference(): Promise<Record<string, Float32Array>> {
  const res = await fetch(infer, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', data: Array.from(x) }] }) });
  expect(res.status).toBe(200);
  return (await readResponse(res)).values;
}

describe('binary tensor data extension', () => {
  it('GET /v2 advertises it; model metadata parameters are strings, numbers or booleans only', async () => {
    const meta = (await (await fetch(`${server.url}/v2`)).json()) as { extensions: string[] };
    expect(meta.extensions).toContain('binary_tensor_data');
    const model = (await (await fetch(`${server.url}/v2/models/tiny`)).json()) as { parameters: Record<string, unknown> };
    for (const [k, v] of Object.entries(model.parameters)) expect(['string', 'number', 'boolean'], k).toContain(typeof v);
    // The preprocessing is still all there, as a JSON string.
    expect(JSON.parse(model.parameters.preprocessing as string)).toMatchObject({ resize: 320, crop: 320, channelOrder: 'RGB' });
  });

  it('binary input and binary output (per output binary_data) give the numbers of JSON inference and onnxruntime', async () => {
    const direct = await runOnnx(model, x, SHAPE);
    const viaJson = await jsonInference();
    const tensor = float32LE(x);
    const { body, headers } = binaryBody(
      { id: 'b1', inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', parameters: { binary_data_size: tensor.length } }], outputs: [{ name: 'logits', parameters: { binary_data: true } }] },
      tensor,
    );
    const r = await readResponse(await fetch(infer, { method: 'POST', headers: { ...headers, 'Content-Type': 'application/octet-stream' }, body }));
    expect(r.status, JSON.stringify(r.header)).toBe(200);
    expect(r.type).toMatch(/^application\/octet-stream/);
    expect(r.headerLength).not.toBeNull();
    expect(r.header.outputs).toEqual([{ name: 'logits', datatype: 'FP32', shape: [N, 1000], parameters: { binary_data_size: N * 1000 * 4 } }]);
    expect(r.values.logits).toEqual(viaJson.logits);
    expect(relDiff(r.values.logits, direct.data)).toBeLessThan(1e-5);
  });

  it('binary input, JSON output (no binary_data asked; no Content-Type header at all)', async () => {
    const viaJson = await jsonInference();
    const tensor = float32LE(x);
    const { body, headers } = binaryBody({ inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', parameters: { binary_data_size: tensor.length } }] }, tensor);
    const r = await readResponse(await fetch(infer, { method: 'POST', headers, body }));
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^application\/json/);
    expect(r.headerLength).toBeNull();
    expect(r.values.logits).toEqual(viaJson.logits);
    expect(r.values.probabilities).toEqual(viaJson.probabilities);
  });

  it('JSON input, every output binary with the request\'s binary_data_output; an output\'s binary_data: false keeps it JSON', async () => {
    const viaJson = await jsonInference();
    const all = await readResponse(
      await fetch(infer, { method: 'POST', body: JSON.stringify({ parameters: { binary_data_output: true }, inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', data: Array.from(x) }] }) }),
    );
    expect(all.status).toBe(200);
    expect(all.header.outputs.map((o) => [o.name, o.parameters?.binary_data_size, o.data])).toEqual([
      ['logits', N * 4000, undefined],
      ['probabilities', N * 4000, undefined],
    ]);
    expect(all.values.logits).toEqual(viaJson.logits);
    expect(all.values.probabilities).toEqual(viaJson.probabilities);
    // Mixed: probabilities binary, logits as JSON data, in one response.
    const mixed = await readResponse(
      await fetch(infer, {
        method: 'POST',
        body: JSON.stringify({
          parameters: { binary_data_output: true },
          inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', data: Array.from(x) }],
          outputs: [{ name: 'logits', parameters: { binary_data: false } }, { name: 'probabilities' }],
        }),
      }),
    );
    expect(mixed.status).toBe(200);
    expect(mixed.header.outputs.find((o) => o.name === 'logits')?.data).toHaveLength(N * 1000);
    expect(mixed.header.outputs.find((o) => o.name === 'probabilities')?.parameters?.binary_data_size).toBe(N * 4000);
    expect(mixed.values.probabilities).toEqual(viaJson.probabilities);
    expect(mixed.values.logits).toEqual(viaJson.logits);
  });

  it('malformed bodies get 400 with the protocol\'s {"error": "..."} and say what is wrong; too large gets 413', async () => {
    const tensor = float32LE(x);
    const input = (size: number, extra: object = {}): object => ({ inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', parameters: { binary_data_size: size }, ...extra }] });
    const small = float32LE(new Float32Array(1 * 3 * 32 * 32));
    const cases: [string, { body: Uint8Array<ArrayBuffer>; headers: Record<string, string> }, RegExp][] = [
      ['header length larger than the body', binaryBody(input(tensor.length), tensor, 10_000_000), /Inference-Header-Content-Length is 10000000 but the body has only \d+ bytes/],
      ['header length not a number', { ...binaryBody(input(tensor.length), tensor), headers: { 'Inference-Header-Content-Length': 'abc' } }, /must be a byte count/],
      ['header length cutting the JSON', binaryBody(input(tensor.length), tensor, 20), /first 20 bytes .* not valid JSON/],
      ['sizes not adding up (fewer declared than sent)', binaryBody(input(tensor.length - 4), tensor), /add up to \d+ bytes, but \d+ bytes follow the JSON header/],
      ['sizes not adding up (more declared than sent)', binaryBody(input(tensor.length + 4), tensor), /add up to \d+ bytes, but \d+ bytes follow/],
      ['size not matching shape x FP32', binaryBody({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', parameters: { binary_data_size: small.length / 2 } }] }, small.subarray(0, small.length / 2)), /binary_data_size is 6144 bytes, but its shape holds 3072 FP32 values = 12288 bytes/],
      ['binary bytes but no input declares them', binaryBody({ inputs: [{ name: 'input', shape: SHAPE, datatype: 'FP32', data: Array.from(x) }] }, tensor), /no input declares parameters.binary_data_size/],
      ['binary_data_size and data both', binaryBody(input(tensor.length, { data: [1] }), tensor), /both `data` and parameters.binary_data_size/],
      ['binary_data_size negative', binaryBody(input(-4), tensor), /binary_data_size must be a non-negative integer/],
      ['binary_data not a boolean', binaryBody({ ...input(tensor.length), outputs: [{ name: 'logits', parameters: { binary_data: 'yes' } }] }, tensor), /binary_data must be true or false/],
      ['classification extension', binaryBody({ ...input(tensor.length), outputs: [{ name: 'logits', parameters: { classification: 3 } }] }, tensor), /classification .* not supported/],
    ];
    for (const [name, { body, headers }, message] of cases) {
      const res = await fetch(infer, { method: 'POST', headers, body });
      const text = await res.text();
      expect(res.status, `${name}: ${text}`).toBe(400);
      const err = JSON.parse(text) as { error: string };
      expect(typeof err.error, name).toBe('string');
      expect(err.error, name).toMatch(message);
    }
    // Without the header, binary_data_size cannot be placed.
    const noHeader = await fetch(infer, { method: 'POST', body: JSON.stringify(input(tensor.length)) });
    expect(noHeader.status).toBe(400);
    expect(((await noHeader.json()) as { error: string }).error).toMatch(/no Inference-Header-Content-Length header/);
    // The body limit (--max-json-mb) covers binary bodies too.
    const big = new Float32Array(8 * 3 * 128 * 128);
    const tooLarge = binaryBody({ inputs: [{ name: 'input', shape: [8, 3, 128, 128], datatype: 'FP32', parameters: { binary_data_size: big.length * 4 } }] }, float32LE(big));
    expect(tooLarge.body.length).toBeGreaterThan(MAX_BODY);
    const res = await fetch(infer, { method: 'POST', headers: tooLarge.headers, body: tooLarge.body });
    expect(res.status).toBe(413);
    expect(typeof ((await res.json()) as { error: string }).error).toBe('string');
    expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200);
  });
});
