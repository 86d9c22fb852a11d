// Errors the server answers with: an HTTP status, a stable machine-readable code and a message a user can act on.

export type ErrorCode =
  | 'empty_body'
  | 'undecodable_image'
  | 'bad_request'
  | 'invalid_topk'
  | 'invalid_multipart'
  | 'invalid_tensor'
  | 'body_too_large'
  | 'image_too_large'
  | 'unsupported_media_type'
  | 'image_too_small'
  | 'not_found'
  | 'method_not_allowed'
  | 'client_closed_request'
  | 'overloaded'
  | 'deadline_exceeded'
  | 'not_ready'
  | 'shutting_down'
  | 'inference_failed'
  | 'internal';

export class ServeError extends Error {
  override name = 'ServeError';
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    /** Extra response headers, e.g. Retry-After on a 503. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }

  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

export const badRequest = (code: ErrorCode, message: string): ServeError => new ServeError(400, code, message);
export const unsupported = (message: string): ServeError => new ServeError(415, 'unsupported_media_type', message);

/** 503 with the number of seconds after which a retry is likely to be served. */
export function unavailable(code: 'overloaded' | 'deadline_exceeded' | 'not_ready' | 'shutting_down', message: string, retryAfterS: number): ServeError {
  return new ServeError(503, code, message, { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterS))) });
}
