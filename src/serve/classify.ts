// POST /classify: one image in (raw body or multipart field `image`), the top-k classes out, with timings
// and the model's weights status.

import express, { type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { type ServeContext, assertServing, weightsWarning } from './context.js';
import { ServeError, badRequest, unsupported } from './errors.js';
import { type PreparedImage, SERVED_FORMATS, cropPng, prepareImage, servedFormatOf } from './preprocess.js';

/**
 * Content types an image is usually sent with (documentation only: the format is always read from the bytes, so
 * `application/octet-stream`, curl's default `application/x-www-form-urlencoded`, none, or a wrong image type
 * work too).
 */
export const IMAGE_CONTENT_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'];

export interface Prediction {
  index: number;
  label: string;
  probability: number;
}

/** Softmax in float64 (stable: shifted by the maximum) and the k most probable classes, most probable first. */
export function topK(logits: Float32Array, labels: string[], k: number): Prediction[] {
  let max = -Infinity;
  for (const v of logits) {
    if (!Number.isFinite(v)) throw new ServeError(500, 'inference_failed', 'the model produced non-finite logits (an untrained very deep network can overflow float32)');
    if (v > max) max = v;
  }
  const p = new Float64Array(logits.length);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += p[i] = Math.exp(logits[i] - max);
  const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b);
  return order.slice(0, k).map((i) => ({ index: i, label: labels[i] ?? `class_${i}`, probability: p[i] / z }));
}

export function parseTopK(raw: unknown, classes: number): number {
  if (raw === undefined) return Math.min(5, classes);
  if (typeof raw !== 'string' || !/^\d{1,7}$/.test(raw)) throw badRequest('invalid_topk', `topk must be an integer from 1 to ${classes}, got ${JSON.stringify(raw)}`);
  const k = Number(raw);
  if (k < 1 || k > classes) throw badRequest('invalid_topk', `topk must be an integer from 1 to ${classes} (the model's class count), got ${k}`);
  return k;
}

function flag(raw: unknown): boolean {
  return raw === '1' || raw === 'true' || raw === '';
}

function run(mw: express.RequestHandler, req: Request, res: Response): Promise<void> {
  return new Promise((resolve, reject) => void mw(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
}

interface Upload {
  bytes: Buffer;
  /** The Content-Type the client declared (of the body, or of the multipart file part), lower case, no parameters. */
  declared: string;
}

/** Reads the image bytes from a raw body of any Content-Type, or from a multipart form's `image` field. */
async function readImage(ctx: ServeContext, upload: express.RequestHandler, req: Request, res: Response): Promise<Upload> {
  const limit = ctx.limits.maxBodyBytes;
  const length = Number(req.headers['content-length'] ?? NaN);
  const rawType = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (rawType === '' && (length === 0 || !req.readable)) throw badRequest('empty_body', 'the request has no image: the body is empty');
  // A body declared far over the limit is refused without reading it; a moderately large one is read and
  // discarded (by the parsers) so that the client, still sending, gets the 413.
  if (length > 8 * limit) {
    res.setHeader('Connection', 'close');
    throw new ServeError(413, 'body_too_large', `the body is ${length} bytes; at most ${limit} are accepted`);
  }
  if (rawType === 'multipart/form-data') {
    await run(upload, req, res);
    if (!req.file) throw badRequest('invalid_multipart', "the multipart form has no file field named 'image'");
    return { bytes: req.file.buffer, declared: req.file.mimetype.toLowerCase() };
  }
  await run(express.raw({ type: () => true, limit }), req, res);
  const body: unknown = req.body;
  return { bytes: Buffer.isBuffer(body) ? body : Buffer.alloc(0), declared: rawType };
}

/**
 * Bytes that are no image at all, sent without an image Content-Type (text, a form, random data), are an
 * unsupported media type (415); bytes sent *as* an image that do not decode are a broken image (400).
 */
function notAnImage(e: unknown, { bytes, declared }: Upload): unknown {
  if (!(e instanceof ServeError) || e.code !== 'undecodable_image' || declared.startsWith('image/') || servedFormatOf(bytes) !== undefined) return e;
  const start = bytes.subarray(0, 32).toString('latin1');
  const shown = /^[\t\n\r\x20-\x7e]*$/.test(start) ? `it starts with ${JSON.stringify(start)}` : `its first bytes are ${[...bytes.subarray(0, 8)].map((x) => x.toString(16).padStart(2, '0')).join(' ')}`;
  return unsupported(`the body is not an image in a served format (Content-Type ${declared ? `'${declared}'` : '(none)'}; ${shown}); send an image (${SERVED_FORMATS.join(', ')}), raw or as multipart/form-data field 'image'`);
}

export function classifyHandler(ctx: ServeContext): express.RequestHandler {
  // One file, in memory, bounded like a raw body; a few small text fields at most.
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: ctx.limits.maxBodyBytes, files: 1, fields: 10, parts: 11, fieldSize: 1024, headerPairs: 100 } }).single('image');
  return async (req: Request, res: Response, next: NextFunction) => {
    let announced = (): void => {};
    try {
      const t0 = performance.now();
      const classes = ctx.labels.length;
      const k = parseTopK(req.query.topk, classes);
      assertServing(ctx);
      if (ctx.batcher.full()) throw ctx.batcher.overloaded();
      announced = ctx.batcher.expect();
      const uploaded = await readImage(ctx, upload, req, res);
      const { bytes } = uploaded;
      if (bytes.length === 0) throw badRequest('empty_body', 'the request has no image: the body is empty');
      const pre = ctx.info.preprocessing;
      let decodeMs = 0;
      const image: PreparedImage = await ctx.decodeSlots.use(
        async () => {
          const t = performance.now();
          const end = ctx.metrics.decode.startTimer();
          try {
            return await prepareImage(bytes, pre, ctx.limits);
          } catch (e) {
            throw notAnImage(e, uploaded);
          } finally {
            end();
            decodeMs = performance.now() - t;
          }
        },
        () => ctx.batcher.overloaded(),
      );
      const aborted = new AbortController();
      res.on('close', () => !res.writableFinished && aborted.abort());
      const submitted = ctx.batcher.submit(image.tensor, [image.cropChannels, image.cropSize, image.cropSize], 1, aborted.signal);
      announced();
      const result = await submitted;
      const logits = (result.outputs.find((o) => o.name === 'logits') ?? result.outputs[0]).data;
      const predictions = topK(logits, ctx.labels, k);
      const warning = weightsWarning(ctx.info);
      res.json({
        model: ctx.info.name,
        architecture: ctx.info.architecture,
        weights: ctx.info.weights,
        trained: !ctx.info.randomWeights,
        ...(warning ? { warning } : {}),
        precision: ctx.info.precision ?? 'float32',
        predictions,
        image: image.source,
        preprocessing: { resize: pre.resize, crop: pre.crop, resizedTo: image.resized, interpolation: pre.interpolation, channelOrder: pre.channelOrder },
        timings: {
          decodeMs: round(decodeMs),
          queueMs: round(result.queueMs),
          inferenceMs: round(result.inferenceMs),
          totalMs: round(performance.now() - t0),
          batchSize: result.batchSize,
        },
        ...(flag(req.query.crop) ? { crop: `data:image/png;base64,${(await cropPng(image)).toString('base64')}` } : {}),
        ...(flag(req.query.logits) ? { logits: Array.from(logits) } : {}),
      });
    } catch (e) {
      announced();
      next(e);
    }
  };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

