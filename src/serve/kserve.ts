// The Open Inference Protocol (KServe v2) REST endpoints, JSON tensors only, so that standard inference
// clients can send preprocessed tensors. Errors follow the protocol: {"error": "<message>"} (plus our `code`).

import express, { type NextFunction, type Request, type Response } from 'express';
import { type ServeContext, assertServing } from './context.js';
import { ServeError } from './errors.js';

const MODEL_VERSION = '1';

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
      // Not part of the protocol's required fields; clients ignore what they do not know.
      parameters: {
        architecture: ctx.info.architecture,
        weights: ctx.info.weights,
        trained: !ctx.info.randomWeights,
        preprocessing: ctx.info.preprocessing,
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

  r.get('/', (_req, res) => void res.json({ name: 'resnet-onnx', version: ctx.version, extensions: [] }));
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
        if (req.headers['inference-header-content-length'] !== undefined) throw new ServeError(415, 'unsupported_media_type', 'the binary tensor extension is not supported; send JSON tensors');
        assertServing(ctx);
        if (ctx.batcher.full()) throw ctx.batcher.overloaded();
        // Announced until submitted; released on close too, should body parsing fail.
        res.locals.announced = ctx.batcher.expect();
        res.once('close', res.locals.announced as () => void);
        next();
      },
      express.json({ type: () => true, limit: ctx.limits.maxJsonBytes }),
      async (req: Request, res: Response, next: NextFunction) => {
        const announced = res.locals.announced as () => void;
        try {
          const body = req.body as { id?: unknown; inputs?: unknown; outputs?: unknown } | undefined;
          if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalid('the body must be a JSON object with an `inputs` array');
          const sig = ctx.signature;
          if (!sig) throw new ServeError(503, 'not_ready', 'the model is still loading');
          if (!Array.isArray(body.inputs) || body.inputs.length !== 1) throw invalid(`\`inputs\` must hold exactly one tensor, named '${sig.inputName}'`);
          const input = body.inputs[0] as InferInput;
          if (input.name !== sig.inputName) throw invalid(`unknown input ${JSON.stringify(input.name)}; the model's input is '${sig.inputName}'`);
          if (input.datatype !== 'FP32') throw invalid(`input datatype must be FP32, got ${JSON.stringify(input.datatype)}`);
          if (input.parameters?.binary_data_size !== undefined) throw new ServeError(415, 'unsupported_media_type', 'binary tensor data is not supported; send JSON tensors');
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
          const data = tensorData(input.data, n * c * h * w);
          const wanted = body.outputs === undefined ? sig.outputs.map((o) => o.name) : Array.isArray(body.outputs) ? body.outputs.map((o) => (o as { name?: unknown }).name) : undefined;
          if (!wanted) throw invalid('`outputs` must be an array of {name}');
          for (const o of wanted) if (typeof o !== 'string' || !sig.outputs.some((s) => s.name === o)) throw invalid(`unknown output ${JSON.stringify(o)}; the model's outputs are ${sig.outputs.map((s) => `'${s.name}'`).join(', ')}`);
          const aborted = new AbortController();
          res.on('close', () => !res.writableFinished && aborted.abort());
          const submitted = ctx.batcher.submit(data, [c, h, w], n, aborted.signal);
          announced();
          const result = await submitted;
          res.json({
            model_name: name,
            model_version: MODEL_VERSION,
            ...(typeof body.id === 'string' ? { id: body.id } : {}),
            parameters: { weights: ctx.info.weights, trained: !ctx.info.randomWeights, queue_ms: result.queueMs, inference_ms: result.inferenceMs, batch_size: result.batchSize },
            outputs: result.outputs
              .filter((o) => wanted.includes(o.name))
              .map((o) => ({ name: o.name, datatype: 'FP32', shape: o.dims, data: Array.from(o.data) })),
          });
        } catch (e) {
          announced();
          next(e);
        }
      },
    );
  }
  return r;
}
