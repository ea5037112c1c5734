// POST /v1/chat/completions: messages → the model's chat template → tokens → choices.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ChatOutputParser, type OutputParserOptions } from '../chat/output-parser.ts';
import { promptOpensReasoning } from '../chat/reasoning-parser.ts';
import { badRequest, toErrorReply } from './errors.ts';
import { checkChoiceCount, checkModel, nowSeconds, responseId, usage, type ServerContext } from './context.ts';
import {
  checkPromptTokens,
  checkSamplingExtras,
  PROMPT_LOGPROBS_WIDTH,
  promptTokenBound,
  resolveMaxTokens,
  samplingParams,
  stopStrings,
  truncatePrompt,
} from './sampling.ts';
import { streamChoices, type ChoiceFinish, type ChoiceSpec } from './choice-stream.ts';
import { LogprobRenderer, vllmPromptLogprobs, type ChatLogprob } from './logprobs.ts';
import { disconnectSignal, SseWriter } from './sse.ts';
import type { ChatBody } from './schemas.ts';
import { checkTools, legacyFunctions, resolveToolChoice, toTemplateMessage, type ToolChoice } from './chat-request.ts';
import { ChoiceMessage } from './chat-response.ts';
import type { TokenGuide, TokenLogprob } from '../engine/types.ts';
import { outputConstraintSpec, toolCallSpec } from '../guided/request-spec.ts';
import { checkRequestFields } from './request-fields.ts';
import { constrainedGuide, tokenConstraints } from './token-constraints.ts';

export interface RenderedPrompt {
  ids: number[];
  text: string;
  toolChoice: ToolChoice;
  tools: Record<string, unknown>[] | undefined;
}

export async function renderPrompt(body: ChatBody, ctx: ServerContext): Promise<RenderedPrompt> {
  if (!ctx.template) {
    throw badRequest('This model has no chat template (tokenizer_config.json has no chat_template); use /v1/completions.', 'messages');
  }
  const tools = checkTools(body);
  const toolChoice = resolveToolChoice(body, tools);
  if (toolChoice.mode === 'auto' && !ctx.chatParsers.toolCalls) {
    throw badRequest("tool_choice 'auto' needs a tool call parser, and this server runs without one; use tool_choice 'none'", 'tool_choice');
  }
  // vLLM refuses both together; continue_final_message alone implies no generation prompt.
  const continueFinal = body.continue_final_message === true;
  if (continueFinal && body.add_generation_prompt === true) {
    throw badRequest('Cannot set both `continue_final_message` and `add_generation_prompt` to True.', 'continue_final_message');
  }
  const chatTemplate = body.chat_template ?? undefined;
  if (chatTemplate !== undefined && !ctx.trustRequestChatTemplate) {
    throw badRequest(
      'Chat template is passed with request, but --trust-request-chat-template is not set. Refused request with untrusted chat template.',
      'chat_template',
    );
  }
  // Template variables: chat_template_kwargs, and vLLM's documents and reasoning_effort over them.
  const kwargs: Record<string, unknown> = { ...body.chat_template_kwargs };
  if (body.documents !== undefined && body.documents !== null) kwargs.documents = body.documents;
  if (body.reasoning_effort !== undefined && body.reasoning_effort !== null) kwargs.reasoning_effort = body.reasoning_effort;
  // Rendered and tokenized off the event loop; the template writes every special token itself (BOS
  // included, where a model has one; add_special_tokens adds the tokenizer's on top, as vLLM).
  const rendered = await ctx.text.renderChat(
    body.messages.map(toTemplateMessage),
    {
      tools,
      addGenerationPrompt: body.add_generation_prompt ?? !continueFinal,
      kwargs: Object.keys(kwargs).length > 0 ? kwargs : undefined,
      ...(continueFinal ? { continueFinalMessage: true } : {}),
      ...(chatTemplate !== undefined ? { chatTemplate } : {}),
    },
    { addSpecialTokens: body.add_special_tokens === true, maxTokens: promptTokenBound(body, ctx.limits.maxModelLen), param: 'messages' },
  );
  let { text, ids } = rendered;
  const kept = truncatePrompt(ids, body, ctx.limits.maxModelLen);
  if (kept !== ids) {
    // Cut on the left, the end (where the reply starts) is unchanged; cut on the right, its text is what remains.
    if (body.truncation_side === 'right') text = (await ctx.text.decode([kept]))[0];
    ids = kept;
  }
  return { ids, text, toolChoice, tools };
}

/**
 * Guided decoding, one guide per choice: a forced tool call (tool_choice 'required' or named), else
 * response_format or vLLM's structured_outputs / guided_*; then allowed_token_ids and bad_words over
 * it. Null when the reply is unconstrained.
 */
export async function chatGuides(ctx: ServerContext, body: ChatBody, prompt: RenderedPrompt, n: number): Promise<TokenGuide[] | null> {
  const choice = prompt.toolChoice;
  const forced = choice.mode === 'required' || choice.mode === 'named';
  const constraint = outputConstraintSpec(body);
  // A forced call takes precedence over response_format, as in vLLM; vLLM refuses guided_* beside one.
  if (forced && constraint && !constraint.param.startsWith('response_format')) {
    throw badRequest('You can only either use guided decoding or tools, not both.', constraint.param.split('.')[0]);
  }
  const spec = forced ? toolCallSpec(prompt.tools ?? [], choice.mode === 'named' ? choice.name : null, body.parallel_tool_calls !== false) : constraint;
  const tokens = await tokenConstraints(body, ctx);
  if (spec === null) return tokens ? Array.from({ length: n }, () => constrainedGuide(undefined, tokens)) : null;
  if (!ctx.guided) throw badRequest('Guided decoding is not available on this server', forced ? 'tool_choice' : spec.param.split('.')[0]);
  // With a reasoning parser and <think> left open by the prompt, the model thinks freely first.
  const guides = await ctx.guided.guides(spec, n, { startInReasoning: ctx.chatParsers.reasoning && promptOpensReasoning(prompt.text) });
  return tokens ? guides.map((g) => constrainedGuide(g, tokens)) : guides;
}

/**
 * What the request asks of the reply's form beyond the parsers: the role (vLLM: the last message's
 * when there is no generation prompt), vLLM's chat echo (that message's text before the content when
 * the roles match) and include_reasoning, OpenAI's legacy function_call in place of tool_calls.
 */
interface ReplyForm {
  role: string;
  echo: string;
  reasoning: boolean;
  legacyFunctions: boolean;
}

function replyForm(body: ChatBody, legacy: boolean): ReplyForm {
  const last = body.messages.length - 1;
  const generationPrompt = body.add_generation_prompt ?? body.continue_final_message !== true;
  const role = generationPrompt ? 'assistant' : body.messages[last].role;
  const echo = body.echo === true && body.messages[last].role === role ? toTemplateMessage(body.messages[last], last).content : '';
  return { role, echo, reasoning: body.include_reasoning !== false, legacyFunctions: legacy };
}

function formMessage(message: Record<string, unknown>, form: ReplyForm): Record<string, unknown> {
  const out: Record<string, unknown> = { ...message, role: form.role };
  if (form.echo !== '') out.content = form.echo + ((out.content as string | null) ?? '');
  if (!form.reasoning) {
    delete out.reasoning_content;
    delete out.reasoning;
  }
  if (form.legacyFunctions) {
    const calls = out.tool_calls as { function: { name: string; arguments: string } }[] | undefined;
    delete out.tool_calls;
    if (calls && calls.length > 0) out.function_call = calls[0].function;
  }
  return out;
}

/** A stream delta in the reply's form; null when nothing of it is left. */
function formDelta(delta: Record<string, unknown>, form: ReplyForm): Record<string, unknown> | null {
  const out = { ...delta };
  if (!form.reasoning) {
    delete out.reasoning_content;
    delete out.reasoning;
    if (Object.keys(out).length === 0) return null;
  }
  if (form.legacyFunctions && Array.isArray(out.tool_calls)) {
    const call = out.tool_calls[0] as { id?: string; function: { name?: string; arguments: string } };
    delete out.tool_calls;
    out.function_call = call.id !== undefined ? { name: call.function.name, arguments: call.function.arguments } : { arguments: call.function.arguments };
  }
  return out;
}

const formFinish = (reason: string | null, form: ReplyForm) => (form.legacyFunctions && reason === 'tool_calls' ? 'function_call' : reason);

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
    checkRequestFields(request.body, 'chat');
    // OpenAI's legacy functions / function_call are served as the tools they describe.
    const legacy = legacyFunctions(request.body);
    const body: ChatBody = legacy ? { ...request.body, ...legacy } : request.body;
    const model = checkModel(ctx, body.model);
    const wantLogprobs = body.logprobs === true;
    if (!wantLogprobs && (body.top_logprobs ?? 0) > 0) {
      throw badRequest("'top_logprobs' requires 'logprobs' to be true", 'top_logprobs');
    }
    const topN = wantLogprobs ? (body.top_logprobs ?? 0) : null;
    const n = body.n ?? 1;
    checkChoiceCount(1, n, ctx.limits.maxChoicesPerRequest);
    checkSamplingExtras(body, n);
    // vLLM: prompt_logprobs, or with echo top_logprobs (returned in non-streamed replies).
    const promptTopN = body.prompt_logprobs ?? (body.echo === true && body.stream !== true ? (body.top_logprobs ?? 0) : null);
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
      // The prompt is the same for every choice: the first one scores it.
      params: samplingParams(body, ctx.limits, { maxTokens, logprobs: topN, promptLogprobs: promptTopN !== null && i === 0 ? PROMPT_LOGPROBS_WIDTH : null, seedOffset: i }),
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
    const form = replyForm(body, legacy !== null);
    const wantTokenIds = body.return_token_ids === true;
    const tokenIds: number[][] = specs.map(() => []);
    let promptEntries: (TokenLogprob | null)[] = [];
    const merged = streamChoices(ctx.engine, ctx.tokenizer, specs, abort.signal);
    const id = responseId('chatcmpl', body.request_id);
    const created = nowSeconds();
    const completionTokens = () => states.reduce((sum, s) => sum + (s.finish?.completionTokens ?? 0), 0);

    try {
      if (body.stream !== true) {
        for await (const delta of merged) {
          const state = states[delta.index];
          if (delta.promptLogprobs) promptEntries = delta.promptLogprobs;
          if (wantTokenIds) tokenIds[delta.index].push(...delta.tokens.map((t) => t.id));
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
            message: formMessage(s.message.message(), form),
            logprobs: topN === null ? null : { content: s.logprobs },
            finish_reason: formFinish(s.message.finishReason(s.finish?.reason), form),
            stop_reason: s.finish?.stopReason ?? null,
            ...(wantTokenIds ? { token_ids: tokenIds[index] } : {}),
          })),
          usage: usage(promptIds.length, completionTokens()),
          ...(promptTopN !== null ? { prompt_logprobs: vllmPromptLogprobs(render, promptIds, promptEntries, promptTopN) } : {}),
          ...(wantTokenIds ? { prompt_token_ids: promptIds } : {}),
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
          await sse.send({
            ...chunk([{ index: i, delta: { role: form.role, content: '' }, logprobs: null, finish_reason: null }]),
            ...(wantTokenIds && i === 0 ? { prompt_token_ids: promptIds } : {}),
          });
        }
        if (form.echo !== '') {
          for (let i = 0; i < n; i++) await sse.send(chunk([{ index: i, delta: { content: form.echo }, logprobs: null, finish_reason: null }]));
        }
        for (; !next.done; next = await iterator.next()) {
          const delta = next.value;
          const state = states[delta.index];
          if (delta.finish) state.finish = delta.finish;
          const deltas = state.add(delta.text, delta.finish !== undefined).map((d) => formDelta(d, form)).filter((d) => d !== null);
          const hasTokens = (topN !== null || wantTokenIds) && delta.tokens.length > 0;
          if (deltas.length === 0 && !hasTokens && !delta.finish) continue;
          const logprobs = hasTokens && topN !== null
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
              finish_reason: last ? formFinish(state.message.finishReason(delta.finish?.reason), form) : null,
              ...(wantTokenIds ? { token_ids: k === 0 ? delta.tokens.map((t) => t.id) : [] } : {}),
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
