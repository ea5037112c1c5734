// POST /v1/completions (OpenAI legacy completions, with vLLM's extensions).
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { TokenLogprob } from '../engine/types.ts';
import { badRequest, toErrorReply } from './errors.ts';
import { checkChoiceCount, checkModel, checkTextFits, nowSeconds, responseId, usage, type ServerContext } from './context.ts';
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
import { SLICE, streamChoices, yieldToEventLoop, type ChoiceDelta, type ChoiceFinish, type ChoiceSpec } from './choice-stream.ts';
import { LogprobRenderer, vllmPromptLogprobs, type LegacyLogprobs } from './logprobs.ts';
import { disconnectSignal, SseWriter } from './sse.ts';
import type { CompletionBody } from './schemas.ts';
import { outputConstraintSpec } from '../guided/request-spec.ts';
import { checkRequestFields } from './request-fields.ts';
import { constrainedGuide, tokenConstraints } from './token-constraints.ts';

const DEFAULT_MAX_TOKENS = 16;

interface Prompt {
  ids: number[];
  /** The text as sent, or the decoded ids for a token prompt (what echo returns). */
  text: string;
}

/** How many prompts the body holds (a list of ids is one prompt), known before anything is tokenized. */
function promptCount(body: CompletionBody): number {
  const p = body.prompt;
  if (typeof p === 'string') return 1;
  return p.length > 0 && (typeof p[0] === 'string' || Array.isArray(p[0])) ? p.length : 1;
}

/** Token ids of every prompt; text prompts are tokenized off the event loop, echo texts decoded there too. */
async function parsePrompts(body: CompletionBody, ctx: ServerContext, echo: boolean): Promise<Prompt[]> {
  const p = body.prompt;
  const maxTokens = promptTokenBound(body, ctx.limits.maxModelLen);
  if (typeof p === 'string' || (p.length > 0 && typeof p[0] === 'string')) {
    const texts = typeof p === 'string' ? [p] : (p as string[]);
    // The cheap bound first, on the event loop: hopeless text never reaches a tokenizer (unless it is truncated after).
    if (maxTokens === ctx.limits.maxModelLen) texts.forEach((text, i) => checkTextFits(ctx, text, texts.length > 1 ? `prompt[${i}]` : 'prompt'));
    const ids = await ctx.text.encode(texts, { addSpecialTokens: body.add_special_tokens ?? true, maxTokens, param: 'prompt' });
    return texts.map((text, i) => ({ ids: ids[i], text }));
  }
  const lists = p.length > 0 && Array.isArray(p[0]) ? (p as number[][]) : [p as number[]];
  // The text of a token prompt is only needed to echo it.
  const texts = echo ? await ctx.text.decode(lists) : lists.map(() => '');
  return lists.map((ids, i) => ({ ids, text: texts[i] }));
}

interface Plan {
  prompts: Prompt[];
  specs: ChoiceSpec[];
  n: number;
  echo: boolean;
  /** echo with max_tokens 0: return the prompt (and its logprobs) only, as vLLM does. */
  echoOnly: boolean;
  logprobs: number | null;
  /** vLLM's prompt_logprobs: alternatives per prompt token, returned with each choice. */
  promptLogprobs: number | null;
  model: string;
}

async function plan(body: CompletionBody, ctx: ServerContext): Promise<Plan> {
  checkRequestFields(body, 'completions');
  const model = checkModel(ctx, body.model);
  if (body.suffix) throw badRequest("'suffix' is not supported", 'suffix');
  const n = body.n ?? 1;
  checkChoiceCount(promptCount(body), n, ctx.limits.maxChoicesPerRequest);
  checkSamplingExtras(body, n);
  const echo = body.echo === true;
  if (body.max_tokens === 0 && !echo) throw badRequest("'max_tokens' must be at least 1 (0 is allowed only with echo)", 'max_tokens');
  const echoOnly = echo && body.max_tokens === 0;
  const logprobs = body.logprobs ?? null;
  const promptLogprobs = body.prompt_logprobs ?? null;
  const prompts = await parsePrompts(body, ctx, echo);
  // vLLM's truncate_prompt_tokens; echo then returns the tokens kept.
  for (const prompt of prompts) {
    const kept = truncatePrompt(prompt.ids, body, ctx.limits.maxModelLen);
    if (kept === prompt.ids) continue;
    prompt.ids = kept;
    if (echo) prompt.text = (await ctx.text.decode([kept]))[0];
  }
  const stops = stopStrings(body);
  const userStopTokenIds = new Set(body.stop_token_ids ?? []);
  const specs: ChoiceSpec[] = [];
  for (let p = 0; p < prompts.length; p++) {
    const prompt = prompts[p];
    // Thousands of prompts are checked in slices, with the event loop served in between.
    if (p % SLICE === SLICE - 1) await yieldToEventLoop();
    checkPromptTokens(prompt.ids, ctx.limits);
    const maxTokens = resolveMaxTokens(prompt.ids.length, echoOnly ? 1 : body.max_tokens, DEFAULT_MAX_TOKENS, ctx.limits, 'max_tokens');
    for (let i = 0; i < n; i++) {
      specs.push({
        index: p * n + i,
        promptTokens: prompt.ids,
        params: samplingParams(body, ctx.limits, {
          maxTokens,
          logprobs,
          // echo's logprobs and prompt_logprobs (vLLM's) both read the prompt's.
          promptLogprobs: promptLogprobs !== null ? PROMPT_LOGPROBS_WIDTH : echo && logprobs !== null ? logprobs : null,
          seedOffset: i,
        }),
        stops,
        includeStop: body.include_stop_str_in_output === true,
        skipSpecialTokens: body.skip_special_tokens ?? true,
        userStopTokenIds,
      });
    }
  }
  return { prompts, specs, n, echo, echoOnly, logprobs, promptLogprobs, model };
}

/** Per choice: what has been said so far (text offsets continue from it). */
class ChoiceState {
  text = '';
  ids: number[] = [];
  entries: (TokenLogprob | null)[] = [];
  echoPending: boolean;
  finish?: ChoiceFinish;
  promptEntries: (TokenLogprob | null)[] = [];
  /** Generated token ids (return_token_ids), and whether a chunk has carried the prompt's. */
  tokenIds: number[] = [];
  sentPromptIds = false;

  constructor(
    readonly prompt: Prompt,
    echo: boolean,
  ) {
    this.echoPending = echo;
  }
}

/** Turns one delta into the text, token ids and logprob entries to send for it (echo folded in). */
function piece(state: ChoiceState, delta: ChoiceDelta, echoOnly: boolean) {
  let text = '';
  const ids: number[] = [];
  const entries: (TokenLogprob | null)[] = [];
  if (state.echoPending) {
    state.echoPending = false;
    text += state.prompt.text;
    ids.push(...state.prompt.ids);
    const prompt = delta.promptLogprobs ?? [];
    for (let i = 0; i < state.prompt.ids.length; i++) entries.push(i === 0 ? null : (prompt[i] ?? null));
  }
  if (!echoOnly) {
    text += delta.text;
    for (const t of delta.tokens) {
      ids.push(t.id);
      entries.push(t.logprob);
    }
  }
  return { text, ids, entries };
}

export function completionsHandler(ctx: ServerContext) {
  return async (request: FastifyRequest<{ Body: CompletionBody }>, reply: FastifyReply) => {
    const body = request.body;
    const p = await plan(body, ctx);
    const spec = p.echoOnly ? null : outputConstraintSpec(body);
    if (spec !== null) {
      if (!ctx.guided) throw badRequest('Guided decoding is not available on this server', spec.param.split('.')[0]);
      const guides = await ctx.guided.guides(spec, p.specs.length);
      p.specs.forEach((choice, i) => (choice.guide = guides[i]));
    }
    // allowed_token_ids and bad_words, over the grammar's guide where there is one.
    const tokens = await tokenConstraints(body, ctx);
    if (tokens) p.specs.forEach((choice) => (choice.guide = constrainedGuide(choice.guide, tokens)));
    const wantTokenIds = body.return_token_ids === true;
    const abort = disconnectSignal(request, reply);
    const states = p.specs.map((s) => new ChoiceState(p.prompts[Math.floor(s.index / p.n)], p.echo));
    const render = new LogprobRenderer(ctx.tokenizer, body.return_tokens_as_token_ids === true);
    const merged = streamChoices(ctx.engine, ctx.tokenizer, p.specs, abort.signal);
    const id = responseId('cmpl', body.request_id);
    const created = nowSeconds();
    const promptTokens = p.prompts.reduce((sum, pr) => sum + pr.ids.length, 0);
    const completionTokens = () =>
      p.echoOnly ? 0 : states.reduce((sum, s) => sum + (s.finish?.completionTokens ?? 0), 0);
    const logprobsOf = (state: ChoiceState, ids: number[], entries: (TokenLogprob | null)[]): LegacyLogprobs | null =>
      p.logprobs === null ? null : render.legacy(ids, entries, p.logprobs, state.text.length);

    try {
      if (body.stream !== true) {
        for await (const delta of merged) {
          const state = states[delta.index];
          const { text, ids, entries } = piece(state, delta, p.echoOnly);
          state.text += text;
          state.ids.push(...ids);
          state.entries.push(...entries);
          if (delta.promptLogprobs) state.promptEntries = delta.promptLogprobs;
          if (wantTokenIds && !p.echoOnly) state.tokenIds.push(...delta.tokens.map((t) => t.id));
          if (delta.finish) state.finish = delta.finish;
        }
        return {
          id,
          object: 'text_completion',
          created,
          model: p.model,
          choices: states.map((s, index) => ({
            index,
            text: s.text,
            logprobs: p.logprobs === null ? null : render.legacy(s.ids, s.entries, p.logprobs, 0),
            finish_reason: p.echoOnly ? 'length' : (s.finish?.reason ?? null),
            stop_reason: s.finish?.stopReason ?? null,
            ...(p.promptLogprobs !== null ? { prompt_logprobs: vllmPromptLogprobs(render, s.prompt.ids, s.promptEntries, p.promptLogprobs) } : {}),
            ...(wantTokenIds ? { prompt_token_ids: s.prompt.ids, token_ids: s.tokenIds } : {}),
          })),
          usage: usage(promptTokens, completionTokens()),
        };
      }

      const includeUsage = body.stream_options?.include_usage === true;
      const sse = new SseWriter(reply, ctx.timeouts.writeMs);
      const iterator = merged[Symbol.asyncIterator]();
      // The first event comes before the headers, so a request the engine refuses is still a plain 400.
      let next = await iterator.next();
      sse.open();
      try {
        for (; !next.done; next = await iterator.next()) {
          const delta = next.value;
          const state = states[delta.index];
          const { text, ids, entries } = piece(state, delta, p.echoOnly);
          if (delta.finish) state.finish = delta.finish;
          const wantLogprobs = p.logprobs !== null && ids.length > 0;
          const newTokens = p.echoOnly ? [] : delta.tokens.map((t) => t.id);
          if (text === '' && !wantLogprobs && !delta.finish && !(wantTokenIds && newTokens.length > 0)) continue;
          const logprobs = wantLogprobs ? logprobsOf(state, ids, entries) : null;
          state.text += text;
          const promptIds = wantTokenIds && !state.sentPromptIds ? { prompt_token_ids: state.prompt.ids } : {};
          if (wantTokenIds) state.sentPromptIds = true;
          await sse.send({
            id,
            object: 'text_completion',
            created,
            model: p.model,
            choices: [{
              index: delta.index,
              text,
              logprobs,
              finish_reason: delta.finish ? (p.echoOnly ? 'length' : delta.finish.reason) : null,
              stop_reason: delta.finish ? delta.finish.stopReason : null,
              // return_token_ids: the prompt's ids on the choice's first chunk, then each chunk's new ids.
              ...(wantTokenIds ? { token_ids: newTokens, ...promptIds } : {}),
            }],
            ...(includeUsage ? { usage: null } : {}),
          });
        }
        if (includeUsage) {
          await sse.send({ id, object: 'text_completion', created, model: p.model, choices: [], usage: usage(promptTokens, completionTokens()) });
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
