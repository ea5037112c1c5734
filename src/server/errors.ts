// The one place HTTP errors get their status, type and OpenAI shape: {error: {message, type, param, code}}.
// Types and numeric codes follow vLLM's OpenAI server (type = the error class name, code = the status).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RequestError } from '../engine/types.ts';
import { TemplateError } from '../chat/template.ts';

const TYPES: Record<number, string> = {
  400: 'BadRequestError',
  401: 'AuthenticationError',
  404: 'NotFoundError',
  405: 'MethodNotAllowedError',
  413: 'BadRequestError',
  415: 'BadRequestError',
  422: 'UnprocessableEntityError',
  500: 'InternalServerError',
  503: 'ServiceUnavailableError',
};

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

/** An error the server answers with on purpose; anything else is a 500. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, param: string | null = null) => new ApiError(400, message, param);

export function errorBody(status: number, message: string, param: string | null = null): ErrorBody {
  return { error: { message, type: TYPES[status] ?? (status >= 500 ? 'InternalServerError' : 'BadRequestError'), param, code: status } };
}

/** What an ajv validation error says about a JSON path: "messages[0].content". */
function paramOf(instancePath: string, missing?: unknown): string | null {
  const parts = instancePath.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (typeof missing === 'string') parts.push(missing);
  if (parts.length === 0) return null;
  return parts.reduce((acc, part) => (/^\d+$/.test(part) ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part), '');
}

/** Descriptions for union-typed parameters, where ajv's own words ("must match a schema in anyOf") help nobody. */
const UNION_TYPES: Record<string, string> = {
  prompt: 'a string, an array of strings, an array of token ids or an array of token id arrays',
  stop: 'a string or an array of strings',
  content: 'a string, an array of content parts or null',
};

interface AjvIssue {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

function validationMessage(issues: AjvIssue[], context: string | undefined): { message: string; param: string | null } {
  // ajv lists the failing branches of an anyOf before the anyOf itself; report the anyOf, once.
  const issue = issues.find((i) => i.keyword === 'anyOf' || i.keyword === 'oneOf') ?? issues[0];
  const param = paramOf(issue.instancePath, issue.params.missingProperty);
  const where = param ?? context ?? 'body';
  if (issue.keyword === 'required') return { message: `'${param}' is a required parameter`, param };
  if (issue.keyword === 'anyOf' || issue.keyword === 'oneOf') {
    const leaf = param?.replace(/\[\d+\]$/, '').split('.').pop() ?? '';
    return { message: `'${where}' must be ${UNION_TYPES[leaf] ?? 'one of the accepted types'}`, param };
  }
  if (issue.keyword === 'additionalProperties') {
    return { message: `'${where}' has an unknown property '${String(issue.params.additionalProperty)}'`, param };
  }
  if (issue.keyword === 'enum') {
    const allowed = (issue.params.allowedValues as unknown[] | undefined)?.map((v) => JSON.stringify(v)).join(', ');
    return { message: `'${where}' must be one of ${allowed}`, param };
  }
  return { message: `'${where}' ${issue.message ?? 'is invalid'}`, param };
}

/** Maps every error a route can raise (ours, the engine's, Fastify's) to an OpenAI-shaped reply. */
export function toErrorReply(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof ApiError) return { status: err.status, body: errorBody(err.status, err.message, err.param) };
  if (err instanceof RequestError) return { status: 400, body: errorBody(400, err.message, err.param) };
  if (err instanceof TemplateError) return { status: 400, body: errorBody(400, err.message, 'messages') };
  const fe = err as Partial<FastifyError> & { validation?: AjvIssue[]; validationContext?: string };
  if (Array.isArray(fe.validation) && fe.validation.length > 0) {
    const { message, param } = validationMessage(fe.validation, fe.validationContext);
    return { status: 400, body: errorBody(400, message, param) };
  }
  const status = typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 500;
  const message = status === 500 ? `Internal server error: ${(err as Error)?.message ?? String(err)}` : String(fe.message);
  return { status, body: errorBody(status, message) };
}

/** For Fastify's `frameworkErrors` option: errors raised before routing (a URL that does not decode), which bypass setErrorHandler. */
export function frameworkErrorHandler(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = toErrorReply(error);
  void reply.code(status).send(body);
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const { status, body } = toErrorReply(err);
    if (status >= 500) request.log.error({ err }, 'request failed');
    void reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody(404, `Not found: ${request.method} ${request.url.split('?')[0]}`));
  });
}
