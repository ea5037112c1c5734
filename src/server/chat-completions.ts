// POST /v1/chat/completions: messages → the model's chat template → tokens → choices.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ChatMessage } from '../chat/template.ts';
import { badRequest, toErrorReply } from './errors.ts';
import { checkModel, nowSeconds, responseId, usage, type ServerContext } from './context.ts';
import { checkPromptTokens, refuseUnsupported, resolveMaxTokens, samplingParams, stopStrings } from './sampling.ts';
import { choiceStream, mergeStreams, type ChoiceFinish, type ChoiceSpec } from './choice-stream.ts';
import { LogprobRenderer, type ChatLogprob } from './logprobs.ts';
import { disconnectSignal, SseWriter } from './sse.ts';
import type { ChatBody, ChatMessageBody } from './schemas.ts';

/** OpenAI content parts → the plain string chat templates expect (text parts joined by newlines, as vLLM does). */
function toTemplateMessage(message: ChatMessageBody, i: number): ChatMessage {
  const { content, ...rest } = message;
  if (content === undefined || content === null) return { ...rest, content: '' };
  if (typeof content === 'string') return { ...rest, content };
  const texts = content.map((part, j) => {
    if (part.type !== 'text' || typeof part.text !== 'string') {
      throw badRequest(`messages[${i}].content[${j}]: only text content parts are supported (got type '${part.type}')`, `messages[${i}].content`);
    }
    return part.text;
  });
  return { ...rest, content: texts.join('\n') };
}

function renderPrompt(body: ChatBody, ctx: ServerContext): number[] {
  if (!ctx.template) {
    throw badRequest('This model has no chat template (tokenizer_config.json has no chat_template); use /v1/completions.', 'messages');
  }
  const toolChoice = body.tool_choice;
  if (toolChoice !== undefined && toolChoice !== null && toolChoice !== 'auto' && toolChoice !== 'none') {
    throw badRequest("Only tool_choice 'auto' and 'none' are supported", 'tool_choice');
  }
  if (body.response_format && body.response_format.type !== 'text') {
    throw badRequest(`response_format '${body.response_format.type}' is not supported`, 'response_format');
  }
  const text = ctx.template.render(body.messages.map(toTemplateMessage), {
    tools: body.tools ?? undefined,
    addGenerationPrompt: body.add_generation_prompt ?? true,
    kwargs: body.chat_template_kwargs ?? undefined,
  });
  // The template writes every special token itself (BOS included, where a model has one).
  return ctx.tokenizer.encode(text, { addSpecialTokens: false });
}

class ChoiceState {
  text = '';
  logprobs: ChatLogprob[] = [];
  finish?: ChoiceFinish;
}

export function chatCompletionsHandler(ctx: ServerContext) {
  return async (request: FastifyRequest<{ Body: ChatBody }>, reply: FastifyReply) => {
    const body = request.body;
    const model = checkModel(ctx, body.model);
    refuseUnsupported(body);
    const wantLogprobs = body.logprobs === true;
    if (!wantLogprobs && (body.top_logprobs ?? 0) > 0) {
      throw badRequest("'top_logprobs' requires 'logprobs' to be true", 'top_logprobs');
    }
    const topN = wantLogprobs ? (body.top_logprobs ?? 0) : null;
    const promptIds = renderPrompt(body, ctx);
    checkPromptTokens(promptIds, ctx.limits, 'messages');
    const maxParam = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
    const maxTokens = resolveMaxTokens(
      promptIds.length,
      body.max_completion_tokens ?? body.max_tokens,
      Number.MAX_SAFE_INTEGER,
      ctx.limits,
      maxParam,
    );
    const n = body.n ?? 1;
    const stops = stopStrings(body);
    const userStopTokenIds = new Set(body.stop_token_ids ?? []);
    const specs: ChoiceSpec[] = Array.from({ length: n }, (_, i) => ({
      index: i,
      promptTokens: promptIds,
      params: samplingParams(body, ctx.limits, { maxTokens, logprobs: topN, promptLogprobs: null, seedOffset: i }),
      stops,
      includeStop: body.include_stop_str_in_output === true,
      skipSpecialTokens: body.skip_special_tokens ?? true,
      userStopTokenIds,
    }));

    const abort = disconnectSignal(request, reply);
    const render = new LogprobRenderer(ctx.tokenizer, body.return_tokens_as_token_ids === true);
    const states = specs.map(() => new ChoiceState());
    const merged = mergeStreams(specs.map((spec) => choiceStream(ctx.engine, ctx.tokenizer, spec, abort.signal)));
    const id = responseId('chatcmpl');
    const created = nowSeconds();
    const completionTokens = () => states.reduce((sum, s) => sum + (s.finish?.completionTokens ?? 0), 0);

    try {
      if (body.stream !== true) {
        for await (const delta of merged) {
          const state = states[delta.index];
          state.text += delta.text;
          if (topN !== null) {
            state.logprobs.push(...render.chat(delta.tokens.map((t) => t.id), delta.tokens.map((t) => t.logprob), topN));
          }
          if (delta.finish) state.finish = delta.finish;
        }
        return {
          id,
          object: 'chat.completion',
          created,
          model,
          choices: states.map((s, index) => ({
            index,
            message: { role: 'assistant', content: s.text },
            logprobs: topN === null ? null : { content: s.logprobs },
            finish_reason: s.finish?.reason ?? null,
            stop_reason: s.finish?.stopReason ?? null,
          })),
          usage: usage(promptIds.length, completionTokens()),
        };
      }

      const includeUsage = body.stream_options?.include_usage === true;
      const sse = new SseWriter(reply);
      const chunk = (choices: unknown[]) => ({
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        choices,
        ...(includeUsage ? { usage: null } : {}),
      });
      const iterator = merged[Symbol.asyncIterator]();
      // The first event comes before the headers, so a request the engine refuses is still a plain 400.
      let next = await iterator.next();
      sse.open();
      try {
        for (let i = 0; i < n; i++) {
          await sse.send(chunk([{ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
        }
        for (; !next.done; next = await iterator.next()) {
          const delta = next.value;
          if (delta.finish) states[delta.index].finish = delta.finish;
          const hasTokens = topN !== null && delta.tokens.length > 0;
          if (delta.text === '' && !hasTokens && !delta.finish) continue;
          const logprobs = hasTokens
            ? { content: render.chat(delta.tokens.map((t) => t.id), delta.tokens.map((t) => t.logprob), topN) }
            : null;
          await sse.send(chunk([{
            index: delta.index,
            delta: delta.text === '' ? {} : { content: delta.text },
            logprobs,
            finish_reason: delta.finish?.reason ?? null,
            ...(delta.finish ? { stop_reason: delta.finish.stopReason } : {}),
          }]));
        }
        if (includeUsage) {
          await sse.send({ id, object: 'chat.completion.chunk', created, model, choices: [], usage: usage(promptIds.length, completionTokens()) });
        }
      } catch (err) {
        await sse.send(toErrorReply(err).body);
      }
      await sse.done();
    } finally {
      abort.abort();
    }
  };
}
