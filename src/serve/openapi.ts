// The OpenAPI 3.1 description served at /openapi.json.

import { IMAGE_CONTENT_TYPES } from './classify.js';
import type { ServeContext } from './context.js';

export function openApi(ctx: ServeContext): object {
  const error = { $ref: '#/components/schemas/Error' };
  const errorResponse = (description: string): object => ({ description, content: { 'application/json': { schema: error } } });
  const v2Error = (description: string): object => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/V2Error' } } } });
  const json = (schema: object, description = 'OK'): object => ({ description, content: { 'application/json': { schema } } });
  const binary = { type: 'string', format: 'binary' };
  const name = { name: 'name', in: 'path', required: true, schema: { type: 'string', enum: [ctx.info.name] } };
  const classes = ctx.labels.length;
  return {
    openapi: '3.1.0',
    info: {
      title: 'resnet-onnx inference server',
      version: ctx.version,
      description:
        `Image classification with ${ctx.info.architecture} (model '${ctx.info.name}', weights: ${ctx.info.weights}). ` +
        `Each image is resized so its shorter side is ${ctx.info.preprocessing.resize} px and the centre ${ctx.info.preprocessing.crop}x${ctx.info.preprocessing.crop} crop is classified (as the paper's Table 5 does for ImageNet). ` +
        'A model whose weights are random-init has not been trained: every response says so, and its labels mean nothing.',
    },
    paths: {
      '/classify': {
        post: {
          summary: 'Classify one image',
          description: `The image as the raw body or as multipart/form-data field 'image'. The format is read from the bytes whatever the Content-Type (${IMAGE_CONTENT_TYPES.join(', ')}, application/octet-stream, curl's default application/x-www-form-urlencoded, or none); it must be JPEG, PNG, WebP, GIF, TIFF or AVIF: SVG, PDF and others are refused. EXIF orientation is applied, alpha is composited onto white, only the first frame of an animation is used.`,
          parameters: [
            { name: 'topk', in: 'query', schema: { type: 'integer', minimum: 1, maximum: classes, default: Math.min(5, classes) }, description: 'how many classes to return' },
            { name: 'crop', in: 'query', schema: { type: 'boolean' }, description: 'also return the crop the network saw, as a PNG data URL' },
            { name: 'logits', in: 'query', schema: { type: 'boolean' }, description: 'also return the raw logits' },
          ],
          requestBody: {
            required: true,
            content: {
              ...Object.fromEntries([...IMAGE_CONTENT_TYPES, 'application/octet-stream'].map((t) => [t, { schema: binary }])),
              'multipart/form-data': { schema: { type: 'object', required: ['image'], properties: { image: binary } } },
            },
          },
          responses: {
            200: json({ $ref: '#/components/schemas/Classification' }),
            400: errorResponse('empty body, undecodable image, bad topk, or a multipart form without an `image` file'),
            413: errorResponse('body larger than the limit, or an image declaring more pixels than the limit'),
            415: errorResponse('the bytes are not an image in a served format (e.g. SVG, PDF, text)'),
            422: errorResponse('image too small to classify meaningfully'),
            503: { ...(errorResponse('overloaded (queue full), deadline exceeded, not ready, or shutting down') as object), headers: { 'Retry-After': { schema: { type: 'integer' }, description: 'seconds' } } },
          },
        },
      },
      '/healthz': { get: { summary: 'Liveness: the process answers', responses: { 200: json({ type: 'object' }) } } },
      '/readyz': { get: { summary: 'Readiness: the model is loaded and warmed up, and the server is not shutting down', responses: { 200: json({ type: 'object' }), 503: errorResponse('not ready') } } },
      '/metrics': { get: { summary: 'Prometheus metrics: requests by route and status, latency, queue depth, batch sizes, inference time', responses: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      '/openapi.json': { get: { summary: 'This document', responses: { 200: json({ type: 'object' }) } } },
      '/': { get: { summary: 'A web page: choose or drop an image, see the crop and the top-5', responses: { 200: { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } } },
      '/v2': { get: { summary: 'Open Inference Protocol: server metadata', responses: { 200: json({ type: 'object' }) } } },
      '/v2/health/live': { get: { summary: 'Open Inference Protocol: liveness', responses: { 200: json({ type: 'object' }) } } },
      '/v2/health/ready': { get: { summary: 'Open Inference Protocol: readiness', responses: { 200: json({ type: 'object' }), 503: json({ type: 'object' }, 'not ready') } } },
      '/v2/models/{name}': { get: { summary: 'Open Inference Protocol: model metadata (parameters.weights says whether it is trained)', parameters: [name], responses: { 200: json({ type: 'object' }), 404: v2Error('unknown model') } } },
      '/v2/models/{name}/ready': { get: { summary: 'Open Inference Protocol: model readiness', parameters: [name], responses: { 200: json({ type: 'object' }), 503: json({ type: 'object' }, 'not ready') } } },
      '/v2/models/{name}/infer': {
        post: {
          summary: 'Open Inference Protocol: inference on preprocessed FP32 tensors (JSON, or the binary tensor data extension)',
          description:
            `One input named as in the model metadata, shape [N, C, H, W] with N <= ${ctx.limits.maxBatch}, already normalised (see the model metadata's parameters.preprocessing, a JSON string). ` +
            'Binary tensor data extension: with an Inference-Header-Content-Length header, the body is that many bytes of JSON followed by the input as raw little-endian FP32 (its parameters.binary_data_size bytes, no data). ' +
            'An output with parameters.binary_data true (or every output, with the request\'s parameters.binary_data_output true) comes back the same way: application/octet-stream, Inference-Header-Content-Length, parameters.binary_data_size per binary output.',
          parameters: [name],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/V2InferRequest' } }, 'application/octet-stream': { schema: binary } } },
          responses: {
            200: { description: 'OK', content: { 'application/json': { schema: { $ref: '#/components/schemas/V2InferResponse' } }, 'application/octet-stream': { schema: binary } } },
            400: v2Error('invalid tensor, or a malformed binary body (header length, binary_data_size)'),
            404: v2Error('unknown model'),
            413: v2Error('body too large'),
            503: v2Error('overloaded, not ready or shutting down'),
          },
        },
      },
    },
    components: {
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } } },
        },
        V2Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' }, code: { type: 'string' } } },
        Classification: {
          type: 'object',
          required: ['model', 'weights', 'trained', 'predictions', 'timings'],
          properties: {
            model: { type: 'string' },
            architecture: { type: 'string' },
            weights: { type: 'string', description: "where the weights came from, from the model's metadata, e.g. 'random-init (seed 0)'" },
            trained: { type: 'boolean', description: 'false for random-init weights: then the predictions mean nothing' },
            warning: { type: 'string' },
            precision: { type: 'string', enum: ['float32', 'int8'], description: "int8 for a model written by `resnet-onnx quantize` (its metadata's `quantization` record)" },
            predictions: { type: 'array', items: { type: 'object', properties: { index: { type: 'integer' }, label: { type: 'string' }, probability: { type: 'number' } } } },
            image: { type: 'object', description: 'the decoded source: format, size after EXIF orientation, orientation, frames, alpha, colour space, sample depth' },
            preprocessing: { type: 'object' },
            timings: { type: 'object', properties: { decodeMs: { type: 'number' }, queueMs: { type: 'number' }, inferenceMs: { type: 'number' }, totalMs: { type: 'number' }, batchSize: { type: 'integer' } } },
            crop: { type: 'string', description: 'data:image/png;base64,... (with ?crop=1)' },
            logits: { type: 'array', items: { type: 'number' } },
          },
        },
        V2Tensor: {
          type: 'object',
          required: ['name', 'shape', 'datatype', 'data'],
          properties: { name: { type: 'string' }, shape: { type: 'array', items: { type: 'integer' } }, datatype: { type: 'string', enum: ['FP32'] }, data: { type: 'array' } },
        },
        V2InferRequest: {
          type: 'object',
          required: ['inputs'],
          properties: { id: { type: 'string' }, inputs: { type: 'array', items: { $ref: '#/components/schemas/V2Tensor' } }, outputs: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } } } } },
        },
        V2InferResponse: {
          type: 'object',
          properties: { model_name: { type: 'string' }, model_version: { type: 'string' }, id: { type: 'string' }, parameters: { type: 'object' }, outputs: { type: 'array', items: { $ref: '#/components/schemas/V2Tensor' } } },
        },
      },
    },
  };
}
