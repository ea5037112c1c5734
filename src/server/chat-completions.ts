// POST /v1/chat/completions: messages → the model's chat template → tokens → choices.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ChatOutputParser, type OutputParserOptions } from '../chat/output-parser.ts';
import { promptOpensReasoning } from '../chat/reasoning-parser.ts';
import { badRequest, toErrorReply } from './errors.ts';
import { checkChoiceCount, checkModel, nowSeconds, responseId, usage, type ServerContext } from './context.ts';
import { checkPromptTokens, resolveMaxTokens, samplingParams, stopStrings } from './sampling.ts';
import { streamChoices, type ChoiceFinish, type ChoiceSpec } from './choice-stream.ts';
import { LogprobRenderer, type ChatLogprob } from './logprobs.ts';
import { disconnectSignal, SseWriter } from './sse.ts';
import type { ChatBody } from './schemas.ts';
import { checkTools, resolveToolChoice, toTemplateMessage, type ToolChoice } from './chat-request.ts';
import { ChoiceMessage } from './chat-response.ts';
import type { TokenGuide } from '../engine/types.ts';
import { responseFormatSpec, toolCallSpec } from '../guided/request-spec.ts';

interface RenderedPrompt {
  ids: number[];
  text: string;
  toolChoice: ToolChoice;
  tools: Record<string, unknown>[] | undefined;
}

async function renderPrompt(body: ChatBody, ctx: ServerContext): Promise<RenderedPrompt> {
  if (!ctx.template) {
    throw badRequest('This model has no chat template (tokenizer_config.json has no chat_template); use /v1/completions.', 'messages');
  }
  const tools = checkTools(body);
  const toolChoice = resolveToolChoice(body, tools);
  if (toolChoice.mode === 'auto' && !ctx.chatParsers.toolCalls) {
    throw badRequest("tool_choice 'auto' needs a tool call parser, and this server runs without one; use tool_choice 'none'", 'tool_choice');
  }
  // Rendered and tokenized off the event loop; the template writes every special token itself (BOS
  // included, where a model has one).
  const { text, ids } = await ctx.text.renderChat(
    body.messages.map(toTemplateMessage),
    { tools, addGenerationPrompt: body.add_generation_prompt ?? true, kwargs: body.chat_template_kwargs ?? undefined },
    { addSpecialTokens: false, maxTokens: ctx.limits.maxModelLen, param: 'messages' },
  );
  return { ids, text, toolChoice, tools };
}

/**
 * Guided decoding, one guide per choice: a forced tool call (tool_choice 'required' or named), else
 * response_format; null when the reply is unconstrained.
 */
async function chatGuides(ctx: ServerContext, body: ChatBody, prompt: RenderedPrompt, n: number): Promise<TokenGuide[] | null> {
  const choice = prompt.toolChoice;
  const forced = choice.mode === 'required' || choice.mode === 'named';
  const spec = forced
    ? toolCallSpec(prompt.tools ?? [], choice.mode === 'named' ? choice.name : null, body.parallel_tool_calls !== false)
    : responseFormatSpec(body.response_format);
  if (spec === null) return null;
  if (!ctx.guided) throw badRequest('Guided decoding is not available on this server', forced ? 'tool_choice' : 'response_format');
  // With a reasoning parser and <think> left open by the prompt, the model thinks freely first.
  return ctx.guided.guides(spec, n, { startInReasoning: ctx.chatParsers.reasoning && promptOpensReasoning(prompt.text) });
}

/** One choice: its reply parsed (reasoning, content, tool calls) as it streams. */
class ChoiceState {
  logprobs: ChatLogprob[] = [];
  finish?: ChoiceFinish;
  readonly output: ChatOutputParser;
  readonly message: ChoiceMessage;

  constructor(parsing: OutputParserOptions, maxToolCalls: number) {
    this.output = new ChatOutputParser(parsing);
    this.message = new ChoiceMessage({ reasoning: parsing.reasoning, maxToolCalls });
  }

  /** The stream deltas a piece of reply text makes (and, at the finish, whatever was held back). */
  add(text: string, finish: boolean): Record<string, unknown>[] {
    const deltas = this.message.add(this.output.push(text));
    if (finish) deltas.push(...this.message.add(this.output.flush()));
    return deltas;
  }
}

export function chatCompletionsHandler(ctx: ServerContext) {
  return async (request: FastifyRequest<{ Body: ChatBody }>, reply: FastifyReply) => {
    const body = request.body;
    const model = checkModel(ctx, body.model);
    const wantLogprobs = body.logprobs === true;
    if (!wantLogprobs && (body.top_logprobs ?? 0) > 0) {
      throw badRequest("'top_logprobs' requires 'logprobs' to be true", 'top_logprobs');
    }
    const topN = wantLogprobs ? (body.top_logprobs ?? 0) : null;
    const n = body.n ?? 1;
    checkChoiceCount(1, n, ctx.limits.maxChoicesPerRequest);
    const prompt = await renderPrompt(body, ctx);
    const promptIds = prompt.ids;
    checkPromptTokens(promptIds, ctx.limits, 'messages');
    const maxParam = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
    const maxTokens = resolveMaxTokens(
      promptIds.length,
      body.max_completion_tokens ?? body.max_tokens,
      Number.MAX_SAFE_INTEGER,
      ctx.limits,
      maxParam,
    );
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
    const guides = await chatGuides(ctx, body, prompt, n);
    specs.forEach((spec, i) => (spec.guide = guides?.[i]));

    const abort = disconnectSignal(request, reply);
    const render = new LogprobRenderer(ctx.tokenizer, body.return_tokens_as_token_ids === true);
    const parsing: OutputParserOptions = {
      reasoning: ctx.chatParsers.reasoning,
      startInReasoning: ctx.chatParsers.reasoning && promptOpensReasoning(prompt.text),
      // required / named (guided decoding) constrain the reply to the same <tool_call> format.
      toolCalls: prompt.toolChoice.mode !== 'none',
    };
    const maxToolCalls = body.parallel_tool_calls === false ? 1 : Number.POSITIVE_INFINITY;
    const states = specs.map(() => new ChoiceState(parsing, maxToolCalls));
    const merged = streamChoices(ctx.engine, ctx.tokenizer, specs, abort.signal);
    const id = responseId('chatcmpl');
    const created = nowSeconds();
    const completionTokens = () => states.reduce((sum, s) => sum + (s.finish?.completionTokens ?? 0), 0);

    try {
      if (body.stream !== true) {
        for await (const delta of merged) {
          const state = states[delta.index];
          state.add(delta.text, delta.finish !== undefined);
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
            message: s.message.message(),
            logprobs: topN === null ? null : { content: s.logprobs },
            finish_reason: s.message.finishReason(s.finish?.reason),
            stop_reason: s.finish?.stopReason ?? null,
          })),
          usage: usage(promptIds.length, completionTokens()),
        };
      }

      const includeUsage = body.stream_options?.include_usage === true;
      const sse = new SseWriter(reply, ctx.timeouts.writeMs);
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
          const state = states[delta.index];
          if (delta.finish) state.finish = delta.finish;
          const deltas = state.add(delta.text, delta.finish !== undefined);
          const hasTokens = topN !== null && delta.tokens.length > 0;
          if (deltas.length === 0 && !hasTokens && !delta.finish) continue;
          const logprobs = hasTokens
            ? { content: render.chat(delta.tokens.map((t) => t.id), delta.tokens.map((t) => t.logprob), topN) }
            : null;
          if (deltas.length === 0) deltas.push({});
          // Reasoning, content and each tool call go in chunks of their own; the logprobs ride on the
          // first, the finish on the last.
          for (let k = 0; k < deltas.length; k++) {
            const last = k === deltas.length - 1;
            await sse.send(chunk([{
              index: delta.index,
              delta: deltas[k],
              logprobs: k === 0 ? logprobs : null,
              finish_reason: last ? state.message.finishReason(delta.finish?.reason) : null,
              ...(last && delta.finish ? { stop_reason: delta.finish.stopReason } : {}),
            }]));
          }
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
