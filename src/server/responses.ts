// POST /v1/responses: OpenAI's Responses API. Finished responses are kept in a bounded in-memory store
// (response-store.ts, --response-store-size; store: false keeps one out) for previous_response_id,
// item_reference and GET /v1/responses/{id}; with the store off the server is stateless. The request is translated into a chat request
// (responses-request.ts) and served by the chat pipeline: the chat template, guided decoding for
// tool_choice required/named and text.format, the engine, the reasoning and tool call parsers,
// abort on disconnect and backpressure; the reply comes back as Response output items
// (responses-output.ts), streamed as the Responses API's named events.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { promptOpensReasoning } from '../chat/reasoning-parser.ts';
import type { OutputParserOptions } from '../chat/output-parser.ts';
import { toErrorReply } from './errors.ts';
import { checkModel, nowSeconds, type ServerContext } from './context.ts';
import { checkPromptTokens, resolveMaxTokens, samplingParams, stopStrings } from './sampling.ts';
import { streamChoices, type ChoiceSpec } from './choice-stream.ts';
import { LogprobRenderer } from './logprobs.ts';
import { disconnectSignal, SseWriter } from './sse.ts';
import { chatGuides, renderPrompt } from './chat-completions.ts';
import { responsesError, toChatRequest } from './responses-request.ts';
import { resolveHistory } from './responses-history.ts';
import { ResponseOutput, responsesId, type ResponseEvent } from './responses-output.ts';
import type { ResponsesBody } from './responses-schema.ts';

/** Everything a response needs before the first token: the prompt rendered, the engine request set up. */
async function prepare(ctx: ServerContext, body: ResponsesBody) {
  const model = checkModel(ctx, body.model);
  const history = resolveHistory(body, ctx.responseStore ?? null);
  const plan = toChatRequest(history.body);
  const prompt = await renderPrompt(plan.chat, ctx);
  checkPromptTokens(prompt.ids, ctx.limits, 'input');
  const maxTokens = resolveMaxTokens(prompt.ids.length, body.max_output_tokens, Number.MAX_SAFE_INTEGER, ctx.limits, 'max_output_tokens');
  const spec: ChoiceSpec = {
    index: 0,
    promptTokens: prompt.ids,
    params: samplingParams(plan.chat, ctx.limits, { maxTokens, logprobs: plan.topLogprobs, promptLogprobs: null, seedOffset: 0 }),
    stops: stopStrings(plan.chat),
    includeStop: body.include_stop_str_in_output === true,
    skipSpecialTokens: body.skip_special_tokens ?? true,
    userStopTokenIds: new Set(body.stop_token_ids ?? []),
  };
  // Last: a guide belongs to the engine request from here on.
  spec.guide = (await chatGuides(ctx, plan.chat, prompt, 1))?.[0];
  const startInReasoning = ctx.chatParsers.reasoning && promptOpensReasoning(prompt.text);
  const parsing: OutputParserOptions = { reasoning: ctx.chatParsers.reasoning, startInReasoning, toolCalls: prompt.toolChoice.mode !== 'none' };
  return { model, plan, prompt, spec, parsing, history };
}

/** The request fields a Response echoes (OpenAI's defaults where the request left them out). */
function echoed(ctx: ServerContext, body: ResponsesBody, model: string, store: boolean) {
  return {
    model,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    max_tool_calls: body.max_tool_calls ?? null,
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: body.previous_response_id ?? null,
    reasoning: body.reasoning ?? null,
    store,
    temperature: body.temperature ?? ctx.limits.defaults.temperature,
    text: body.text ?? { format: { type: 'text' } },
    tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [],
    top_logprobs: body.top_logprobs ?? 0,
    top_p: body.top_p ?? ctx.limits.defaults.topP,
    truncation: 'disabled',
    metadata: body.metadata ?? {},
    ...(body.user !== undefined && body.user !== null ? { user: body.user } : {}),
  };
}

export function responsesHandler(ctx: ServerContext) {
  return async (request: FastifyRequest<{ Body: ResponsesBody }>, reply: FastifyReply) => {
    const body = request.body;
    let prepared: Awaited<ReturnType<typeof prepare>>;
    try {
      prepared = await prepare(ctx, body);
    } catch (err) {
      throw responsesError(err);
    }
    const { model, plan, prompt, spec, parsing, history } = prepared;
    const store = body.store !== false ? (ctx.responseStore ?? null) : null;
    const id = responsesId('resp');
    const createdAt = nowSeconds();
    const abort = disconnectSignal(request, reply);
    const output = new ResponseOutput({
      parsing,
      maxToolCalls: plan.maxToolCalls,
      logprobs: plan.topLogprobs === null ? null : { render: new LogprobRenderer(ctx.tokenizer, false), topN: plan.topLogprobs },
      reasoningEndToken: ctx.tokenizer.addedTokens.get('</think>') ?? null,
    });
    const merged = streamChoices(ctx.engine, ctx.tokenizer, [spec], abort.signal);
    const base = { id, object: 'response', created_at: createdAt };
    const echo = echoed(ctx, body, model, store !== null);
    // A finished response is kept for previous_response_id, item_reference and GET /v1/responses/{id}.
    const keep = (done: ReturnType<typeof response>) => {
      if (store !== null && (done.status === 'completed' || done.status === 'incomplete')) {
        store.put(id, { response: done, conversation: [...history.items, ...(done.output as unknown as Record<string, unknown>[])] });
      }
    };

    const response = () => {
      const finish = output.finish;
      const status = finish === undefined ? 'in_progress' : finish.reason === 'abort' ? 'cancelled' : output.incomplete ? 'incomplete' : 'completed';
      const outputTokens = finish?.completionTokens ?? 0;
      return {
        ...base,
        status,
        background: false,
        error: null,
        incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
        output: finish === undefined ? [] : output.items,
        ...echo,
        usage:
          finish === undefined
            ? null
            : {
                input_tokens: prompt.ids.length,
                input_tokens_details: { cached_tokens: 0 },
                output_tokens: outputTokens,
                output_tokens_details: { reasoning_tokens: output.reasoningTokens },
                total_tokens: prompt.ids.length + outputTokens,
              },
      };
    };

    try {
      if (body.stream !== true) {
        try {
          for await (const delta of merged) output.push(delta);
        } catch (err) {
          throw responsesError(err);
        }
        const done = response();
        keep(done);
        return done;
      }

      const sse = new SseWriter(reply, ctx.timeouts.writeMs);
      let sequence = 0;
      const send = (event: ResponseEvent) => sse.sendEvent(event.type, { ...event, sequence_number: sequence++ });
      const iterator = merged[Symbol.asyncIterator]();
      // The first delta comes before the headers, so a request the engine refuses is still a plain 400.
      let next: IteratorResult<Parameters<ResponseOutput['push']>[0]>;
      try {
        next = await iterator.next();
      } catch (err) {
        throw responsesError(err);
      }
      sse.open();
      try {
        await send({ type: 'response.created', response: response() });
        await send({ type: 'response.in_progress', response: response() });
        for (; !next.done; next = await iterator.next()) {
          for (const event of output.push(next.value)) await send(event);
        }
        const done = response();
        keep(done);
        await send({ type: done.status === 'incomplete' ? 'response.incomplete' : 'response.completed', response: done });
      } catch (err) {
        // OpenAI's error event; the `error` object as well, which the openai client raises as an APIError.
        const { error } = toErrorReply(responsesError(err)).body;
        await send({ type: 'error', code: String(error.code), message: error.message, param: error.param, error });
      }
      sse.end();
    } finally {
      abort.abort();
    }
  };
}
