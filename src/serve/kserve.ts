// The Open Inference Protocol (KServe v2) REST endpoints, so that standard inference clients (tritonclient,
// KServe's) can send preprocessed tensors, as JSON or with the binary tensor data extension (both ways).
// Errors follow the protocol: {"error": "<message>"} (plus our `code`).

import express, { type NextFunction, type Request, type Response } from 'express';
import { type ServeContext, assertServing, weightsWarning } from './context.js';
import { ServeError } from './errors.js';
import { HEADER_LENGTH, binaryDataSize, encodeInferBody, floatsFromLE, floatsToLE, splitInferBody } from './kserve-binary.js';

const MODEL_VERSION = '1';
/** The protocol extensions this server implements, as GET /v2 lists them. */
export const EXTENSIONS = ['binary_tensor_data'];

interface InferInput {
  name?: unknown;
  shape?: unknown;
  datatype?: unknown;
  parameters?: Record<string, unknown>;
  data?: unknown;
}

const invalid = (message: string): ServeError => new ServeError(400, 'invalid_tensor', message);

/** Flattens (possibly nested) JSON numbers into a Float32Array of exactly `count` values. */
function tensorData(data: unknown, count: number): Float32Array {
  const out = new Float32Array(count);
  let n = 0;
  const stack: unknown[] = [data];
  // Depth-first, left to right, without recursion (a hostile body can nest deeply).
  const walk = (v: unknown): void => {
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw invalid('tensor data must be finite numbers');
      if (n >= count) throw invalid(`tensor data has more than the ${count} values its shape declares`);
      out[n++] = v;
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]);
    } else throw invalid(`tensor data must be numbers (flat or nested arrays), found ${v === null ? 'null' : typeof v}`);
  };
  while (stack.length > 0) walk(stack.pop());
  if (n !== count) throw invalid(`tensor data has ${n} values; its shape declares ${count}`);
  return out;
}

/** The input tensor's values: JSON `data`, or its `binary_data_size` bytes after the JSON header. */
function inputData(input: InferInput, count: number, binary: Buffer | undefined): Float32Array {
  const what = `input '${String(input.name)}'`;
  const size = binaryDataSize(input.parameters, what);
  if (size === undefined) {
    if (binary !== undefined && binary.length > 0)
      throw invalid(`${binary.length} bytes follow the JSON header (Inference-Header-Content-Length), but no input declares parameters.binary_data_size`);
    return tensorData(input.data, count);
  }
  if (binary === undefined) throw invalid(`${what} declares parameters.binary_data_size but the request has no Inference-Header-Content-Length header saying where its JSON ends`);
  if (input.data !== undefined) throw invalid(`${what} has both \`data\` and parameters.binary_data_size; send one`);
  // One input: its size must account for every byte after the header.
  if (size !== binary.length) throw invalid(`the inputs' binary_data_size add up to ${size} bytes, but ${binary.length} bytes follow the JSON header`);
  if (size !== count * 4) throw invalid(`${what}: binary_data_size is ${size} bytes, but its shape holds ${count} FP32 values = ${count * 4} bytes`);
  return floatsFromLE(binary, what);
}

/**
 * The outputs to return, each with whether it goes as binary data: an output's `parameters.binary_data` decides,
 * else the request's `parameters.binary_data_output` (default false). No `outputs` means all of them.
 */
function requestedOutputs(body: { outputs?: unknown; parameters?: unknown }, available: string[]): Map<string, boolean> {
  const flag = (params: unknown, key: string, what: string): boolean | undefined => {
    if (params === undefined) return undefined;
    if (params === null || typeof params !== 'object' || Array.isArray(params)) throw invalid(`${what}: parameters must be a JSON object`);
    const p = params as Record<string, unknown>;
    if (p.classification !== undefined) throw invalid(`${what}: parameters.classification (the classification extension) is not supported; request the logits, or POST the image to /classify for the top-k`);
    const v = p[key];
    if (v !== undefined && typeof v !== 'boolean') throw invalid(`${what}: parameters.${key} must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean | undefined;
  };
  const all = flag(body.parameters, 'binary_data_output', 'the request') ?? false;
  const wanted = new Map<string, boolean>();
  if (body.outputs === undefined) {
    for (const o of available) wanted.set(o, all);
    return wanted;
  }
  if (!Array.isArray(body.outputs)) throw invalid('`outputs` must be an array of {name}');
  for (const o of body.outputs as unknown[]) {
    const out = (o ?? {}) as { name?: unknown; parameters?: unknown };
    if (typeof out.name !== 'string' || !available.includes(out.name)) throw invalid(`unknown output ${JSON.stringify(out.name)}; the model's outputs are ${available.map((s) => `'${s}'`).join(', ')}`);
    wanted.set(out.name, flag(out.parameters, 'binary_data', `output '${out.name}'`) ?? all);
  }
  return wanted;
}

export function kserveRouter(ctx: ServeContext): express.Router {
  const r = express.Router();
  const name = ctx.info.name;

  const modelMetadata = (): object => {
    const sig = ctx.signature;
    return {
      name,
      versions: [MODEL_VERSION],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: sig?.inputName ?? 'input', datatype: 'FP32', shape: [-1, ctx.info.preprocessing.channelOrder === 'L' ? 1 : 3, -1, -1] }],
      outputs: (sig?.outputs ?? [{ name: 'logits', shape: [] }]).map((o) => ({ name: o.name, datatype: 'FP32', shape: [-1, ctx.labels.length] })),
      // Not part of the protocol's required fields; clients ignore what they do not know. The protocol's
      // parameter values are strings, numbers or booleans: the preprocessing is a JSON string.
      parameters: {
        architecture: ctx.info.architecture,
        weights: ctx.info.weights,
        trained: !ctx.info.randomWeights,
        ...(ctx.info.randomWeights ? { warning: weightsWarning(ctx.info) ?? '' } : {}),
        precision: ctx.info.precision ?? 'float32',
        ...(ctx.info.metadata.quantization !== undefined ? { quantization: ctx.info.metadata.quantization } : {}),
        preprocessing: JSON.stringify(ctx.info.preprocessing),
        labels: ctx.labels.length,
        max_batch_size: ctx.limits.maxBatch,
      },
    };
  };

  const checkModel = (req: Request): void => {
    if (req.params.name !== name) throw new ServeError(404, 'not_found', `unknown model '${req.params.name}'; this server serves '${name}'`);
    const v = req.params.version;
    if (v !== undefined && v !== MODEL_VERSION) throw new ServeError(404, 'not_found', `model '${name}' has no version '${v}'; it has version ${MODEL_VERSION}`);
  };

  r.get('/', (_req, res) => void res.json({ name: 'resnet-onnx', version: ctx.version, extensions: EXTENSIONS }));
  r.get('/health/live', (_req, res) => void res.json({ live: true }));
  r.get('/health/ready', (_req, res) => {
    const ready = ctx.state.ready && !ctx.state.draining;
    res.status(ready ? 200 : 503).json({ ready });
  });
  for (const base of ['/models/:name', '/models/:name/versions/:version']) {
    r.get(base, (req, res) => {
      checkModel(req);
      res.json(modelMetadata());
    });
    r.get(`${base}/ready`, (req, res) => {
      checkModel(req);
      const ready = ctx.state.ready && !ctx.state.draining;
      res.status(ready ? 200 : 503).json({ name, ready });
    });
    r.post(
      `${base}/infer`,
      (req, res, next) => {
        checkModel(req);
        assertServing(ctx);
        if (ctx.batcher.full()) throw ctx.batcher.overloaded();
        // Announced until submitted; released on close too, should body parsing fail.
        res.locals.announced = ctx.batcher.expect();
        res.once('close', res.locals.announced as () => void);
        next();
      },
      // Any Content-Type: JSON, or a JSON header plus binary tensors (which clients label octet-stream or not at all).
      express.raw({ type: () => true, limit: ctx.limits.maxJsonBytes }),
      async (req: Request, res: Response, next: NextFunction) => {
        const announced = res.locals.announced as () => void;
        try {
          const raw: unknown = req.body;
          const { json, binary } = splitInferBody(Buffer.isBuffer(raw) ? raw : Buffer.alloc(0), req.headers[HEADER_LENGTH]);
          const body = json as { id?: unknown; inputs?: unknown; outputs?: unknown; parameters?: unknown } | undefined;
          if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalid('the body must be a JSON object with an `inputs` array');
          const sig = ctx.signature;
          if (!sig) throw new ServeError(503, 'not_ready', 'the model is still loading');
          if (!Array.isArray(body.inputs) || body.inputs.length !== 1) throw invalid(`\`inputs\` must hold exactly one tensor, named '${sig.inputName}'`);
          const input = body.inputs[0] as InferInput;
          if (input.name !== sig.inputName) throw invalid(`unknown input ${JSON.stringify(input.name)}; the model's input is '${sig.inputName}'`);
          if (input.datatype !== 'FP32') throw invalid(`input datatype must be FP32, got ${JSON.stringify(input.datatype)}`);
          const channels = ctx.info.preprocessing.channelOrder === 'L' ? 1 : 3;
          const shape = input.shape;
          if (!Array.isArray(shape) || shape.length !== 4 || shape.some((d) => !Number.isInteger(d) || (d as number) < 1))
            throw invalid(`input shape must be [N, ${channels}, H, W] with positive integers, got ${JSON.stringify(shape)}`);
          const [n, c, h, w] = shape as number[];
          if (c !== channels) throw invalid(`input shape ${JSON.stringify(shape)}: the model takes ${channels} channels`);
          if (n > ctx.limits.maxBatch) throw invalid(`input shape ${JSON.stringify(shape)}: at most ${ctx.limits.maxBatch} images per request (the max batch size)`);
          // Five stride-2 stages need 32 pixels; models trained on smaller crops (28x28) take their crop size.
          const minSide = Math.min(32, ctx.info.preprocessing.crop);
          const maxSide = 4 * ctx.info.preprocessing.crop;
          if (h < minSide || w < minSide || h > maxSide || w > maxSide) throw invalid(`input shape ${JSON.stringify(shape)}: H and W must be from ${minSide} to ${maxSide}`);
          const data = inputData(input, n * c * h * w, binary);
          const requested = requestedOutputs(body, sig.outputs.map((o) => o.name));
          const aborted = new AbortController();
          res.on('close', () => !res.writableFinished && aborted.abort());
          const submitted = ctx.batcher.submit(data, [c, h, w], n, aborted.signal);
          announced();
          const result = await submitted;
          const binaries: Buffer[] = [];
          const outputs = result.outputs
            .filter((o) => requested.has(o.name))
            .map((o) => {
              if (!requested.get(o.name)) return { name: o.name, datatype: 'FP32', shape: o.dims, data: Array.from(o.data) };
              const bytes = floatsToLE(o.data);
              binaries.push(bytes);
              return { name: o.name, datatype: 'FP32', shape: o.dims, parameters: { binary_data_size: bytes.length } };
            });
          const response = {
            model_name: name,
            model_version: MODEL_VERSION,
            ...(typeof body.id === 'string' ? { id: body.id } : {}),
            parameters: { weights: ctx.info.weights, trained: !ctx.info.randomWeights, ...(ctx.info.randomWeights ? { warning: weightsWarning(ctx.info) ?? '' } : {}), precision: ctx.info.precision ?? 'float32', queue_ms: result.queueMs, inference_ms: result.inferenceMs, batch_size: result.batchSize },
            outputs,
          };
          if (binaries.length === 0) {
            res.json(response);
            return;
          }
          const encoded = encodeInferBody(response, binaries);
          res.setHeader('Inference-Header-Content-Length', String(encoded.headerLength));
          res.type('application/octet-stream').send(encoded.body);
        } catch (e) {
          announced();
          next(e);
        }
      },
    );
  }
  return r;
}
