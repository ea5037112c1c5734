// POST /tokenize and POST /detokenize as vLLM's OpenAI server has them: a text prompt, or chat
// messages rendered through the model's template exactly as /v1/chat/completions renders them, in;
// token ids out (and back). Outside /v1, so not behind --api-key, as in vLLM.
import type { FastifyInstance } from 'fastify';
import { badRequest } from './errors.ts';
import { checkModel, checkTextFits, type ServerContext } from './context.ts';
import { chatBodySchema, type ChatBody, type ChatMessageBody } from './schemas.ts';
import { checkTools, toTemplateMessage } from './chat-request.ts';

const nullableBool = { type: ['boolean', 'null'] };

export const tokenizeBodySchema = {
  type: 'object',
  properties: {
    model: { type: ['string', 'null'] },
    prompt: { type: 'string' },
    messages: chatBodySchema.properties.messages,
    add_generation_prompt: nullableBool,
    add_special_tokens: nullableBool,
    return_token_strs: nullableBool,
    tools: chatBodySchema.properties.tools,
    chat_template_kwargs: chatBodySchema.properties.chat_template_kwargs,
  },
} as const;

export const detokenizeBodySchema = {
  type: 'object',
  required: ['tokens'],
  properties: {
    model: { type: ['string', 'null'] },
    tokens: { type: 'array', items: { type: 'integer' } },
  },
} as const;

export interface TokenizeBody {
  model?: string | null;
  prompt?: string;
  messages?: ChatMessageBody[];
  add_generation_prompt?: boolean | null;
  add_special_tokens?: boolean | null;
  return_token_strs?: boolean | null;
  tools?: Record<string, unknown>[] | null;
  chat_template_kwargs?: Record<string, unknown> | null;
}

export interface DetokenizeBody {
  model?: string | null;
  tokens: number[];
}

export interface TokenizeResponse {
  count: number;
  max_model_len: number;
  tokens: number[];
  /** Each token's text when return_token_strs (the decoded piece; vLLM gives the raw vocabulary entry). */
  token_strs: string[] | null;
}

/** Token ids of a /tokenize body, under the same length bound as the generation routes. */
async function tokenizeIds(body: TokenizeBody, ctx: ServerContext): Promise<number[]> {
  const hasPrompt = body.prompt !== undefined;
  const hasMessages = body.messages !== undefined;
  if (hasPrompt === hasMessages) throw badRequest("Give exactly one of 'prompt' and 'messages'", hasPrompt ? 'messages' : 'prompt');
  const maxTokens = ctx.limits.maxModelLen;
  if (hasPrompt) {
    checkTextFits(ctx, body.prompt!, 'prompt');
    const [ids] = await ctx.text.encode([body.prompt!], { addSpecialTokens: body.add_special_tokens ?? true, maxTokens, param: 'prompt' });
    return ids;
  }
  if (!ctx.template) throw badRequest('This model has no chat template (tokenizer_config.json has no chat_template).', 'messages');
  // As for chat completions, the template writes the special tokens itself (vLLM's default here too).
  const { ids } = await ctx.text.renderChat(
    body.messages!.map(toTemplateMessage),
    { tools: checkTools(body as ChatBody), addGenerationPrompt: body.add_generation_prompt ?? true, kwargs: body.chat_template_kwargs ?? undefined },
    { addSpecialTokens: body.add_special_tokens ?? false, maxTokens, param: 'messages' },
  );
  return ids;
}

export function registerTokenizeRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post<{ Body: TokenizeBody }>('/tokenize', { schema: { body: tokenizeBodySchema } }, async (request): Promise<TokenizeResponse> => {
    const body = request.body;
    checkModel(ctx, body.model);
    const tokens = await tokenizeIds(body, ctx);
    // The same limit as the generation routes (vLLM's /tokenize has none): a prompt no request could use.
    if (tokens.length > ctx.limits.maxModelLen) {
      const param = body.prompt !== undefined ? 'prompt' : 'messages';
      throw badRequest(`The prompt is ${tokens.length} tokens, more than max-model-len (${ctx.limits.maxModelLen}).`, param);
    }
    return {
      count: tokens.length,
      max_model_len: ctx.limits.maxModelLen,
      tokens,
      token_strs: body.return_token_strs === true ? await ctx.text.tokenTexts(tokens) : null,
    };
  });

  app.post<{ Body: DetokenizeBody }>('/detokenize', { schema: { body: detokenizeBodySchema } }, async (request) => {
    const body = request.body;
    checkModel(ctx, body.model);
    const { vocabSize, maxModelLen } = ctx.limits;
    // No text this long can come back from the model: the same limit as a prompt.
    if (body.tokens.length > maxModelLen) {
      throw badRequest(`'tokens' holds ${body.tokens.length} ids, more than max-model-len (${maxModelLen}).`, 'tokens');
    }
    body.tokens.forEach((id, i) => {
      if (id < 0 || id >= vocabSize) throw badRequest(`tokens[${i}] = ${id} is not a token id in [0, ${vocabSize})`, 'tokens');
    });
    const [prompt] = await ctx.text.decode([body.tokens]);
    return { prompt };
  });
}
