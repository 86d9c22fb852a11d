// The HTTP application: routes, access logs, metrics, and one error handler that turns every failure into
// JSON with the right status (a client's bad input is never a 500).

import { randomUUID } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { pinoHttp } from 'pino-http';
import { classifyHandler } from './classify.js';
import type { ServeContext } from './context.js';
import { ServeError } from './errors.js';
import { kserveRouter } from './kserve.js';
import { openApi } from './openapi.js';
import { PAGE_CSP, PAGE_CSS, PAGE_JS, pageHtml } from './page.js';

/** Routes and their methods, for 405 answers and bounded metric labels. */
const ROUTES: Record<string, string[]> = {
  '/': ['GET'],
  '/app.js': ['GET'],
  '/app.css': ['GET'],
  '/favicon.ico': ['GET'],
  '/classify': ['POST'],
  '/healthz': ['GET'],
  '/readyz': ['GET'],
  '/metrics': ['GET'],
  '/openapi.json': ['GET'],
};

/** Maps what the body parsers (body-parser, multer/busboy) throw onto our errors. */
function asServeError(e: unknown, ctx: ServeContext): ServeError {
  if (e instanceof ServeError) return e;
  if (e instanceof multer.MulterError) {
    if (e.code === 'LIMIT_FILE_SIZE') return new ServeError(413, 'body_too_large', `the uploaded file is larger than ${ctx.limits.maxBodyBytes} bytes`);
    if (e.code === 'LIMIT_UNEXPECTED_FILE') return new ServeError(400, 'invalid_multipart', `unexpected file field '${e.field ?? ''}': send the image in the field 'image' (one file)`);
    return new ServeError(400, 'invalid_multipart', `invalid multipart form: ${e.message}`);
  }
  const err = e as { type?: string; status?: number; message?: string };
  switch (err.type) {
    case 'entity.too.large':
      return new ServeError(413, 'body_too_large', `the body is larger than the limit of ${(err as { limit?: number }).limit ?? ctx.limits.maxBodyBytes} bytes`);
    case 'entity.parse.failed':
      return new ServeError(400, 'bad_request', `the body is not valid JSON: ${err.message}`);
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new ServeError(415, 'unsupported_media_type', err.message ?? 'unsupported content encoding');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return new ServeError(400, 'bad_request', err.message ?? 'the request body could not be read');
  }
  // busboy's errors for a malformed multipart body (no boundary, truncated, bad headers).
  if (/multipart|boundary|Unexpected end of form|Malformed part header/i.test(err.message ?? '')) return new ServeError(400, 'invalid_multipart', `invalid multipart form: ${err.message}`);
  if (typeof err.status === 'number' && err.status >= 400 && err.status < 500) return new ServeError(err.status, 'bad_request', err.message ?? 'bad request');
  return new ServeError(500, 'internal', 'internal server error');
}

export function createApp(ctx: ServeContext): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use(
    pinoHttp({
      logger: ctx.log,
      genReqId: (req, res) => {
        const given = req.headers['x-request-id'];
        const id = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
        res.setHeader('X-Request-Id', id);
        return id;
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
      autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/readyz' || req.url === '/metrics' },
      serializers: { req: (req: { id: unknown; method: string; url: string }) => ({ id: req.id, method: req.method, url: req.url }), res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }) },
    }),
  );

  // Metrics: one sample per answered request, labelled by route pattern (bounded), not by raw URL.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const end = ctx.metrics.latency.startTimer();
    res.on('finish', () => {
      const route = req.route ? `${req.baseUrl}${String((req.route as { path: string }).path)}` : ROUTES[req.path] ? req.path : 'unmatched';
      ctx.metrics.requests.inc({ route, method: req.method, status: String(res.statusCode) });
      end({ route, method: req.method });
    });
    // While draining, ask keep-alive clients to reconnect (elsewhere) after this response.
    if (ctx.state.draining) res.setHeader('Connection', 'close');
    next();
  });

  app.get('/', (_req, res) => {
    res.setHeader('Content-Security-Policy', PAGE_CSP);
    res.type('html').send(pageHtml(ctx));
  });
  app.get('/app.js', (_req, res) => void res.type('application/javascript').send(PAGE_JS));
  app.get('/app.css', (_req, res) => void res.type('text/css').send(PAGE_CSS));
  app.get('/favicon.ico', (_req, res) => void res.status(204).end());
  app.get('/healthz', (_req, res) => void res.json({ status: 'alive' }));
  app.get('/readyz', (_req, res) => {
    const s = ctx.state;
    if (s.ready && !s.draining) {
      res.json({ status: 'ready', model: ctx.info.name, weights: ctx.info.weights, trained: !ctx.info.randomWeights });
      return;
    }
    const err = s.draining
      ? new ServeError(503, 'shutting_down', 'shutting down')
      : s.failed
        ? new ServeError(503, 'not_ready', `the model could not be loaded: ${s.failed}`)
        : new ServeError(503, 'not_ready', 'the model is loading and warming up');
    res.status(503).json(err.toJSON());
  });
  app.get('/metrics', async (_req, res) => {
    res.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
  });
  app.get('/openapi.json', (_req, res) => void res.json(openApi(ctx)));
  app.post('/classify', classifyHandler(ctx));
  app.use('/v2', kserveRouter(ctx));

  app.use((req: Request, _res: Response, next: NextFunction) => {
    const methods = ROUTES[req.path];
    if (methods) next(new ServeError(405, 'method_not_allowed', `${req.method} ${req.path} is not allowed; use ${methods.join(', ')}`));
    else next(new ServeError(404, 'not_found', `no route ${req.method} ${req.path}; see /openapi.json`));
  });

  // Four arguments: Express's error-handler signature.
  app.use((e: unknown, req: Request, res: Response, _next: NextFunction) => {
    const err = asServeError(e, ctx);
    if (err.status >= 500 && err.code === 'internal') req.log.error({ err: e }, 'unhandled error');
    if (res.headersSent) {
      res.end();
      return;
    }
    if (err.status === 405) res.setHeader('Allow', ROUTES[req.path]?.join(', ') ?? '');
    for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
    // The Open Inference Protocol's error body is {"error": "<message>"}; we add our code beside it.
    if (req.path.startsWith('/v2')) res.status(err.status).json({ error: err.message, code: err.code });
    else res.status(err.status).json(err.toJSON());
  });
  return app;
}
