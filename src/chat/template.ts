// The model directory's chat template (tokenizer_config.json → chat_template), rendered with @huggingface/jinja.
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  /** Always a string here: the server flattens OpenAI content parts and turns null into "". */
  content: string;
  [key: string]: unknown;
}

export interface RenderOptions {
  tools?: unknown[];
  /** Defaults to true: the prompt ends where the assistant's reply begins. */
  addGenerationPrompt?: boolean;
  /** Extra template variables, e.g. { enable_thinking: false } (vLLM's chat_template_kwargs). */
  kwargs?: Record<string, unknown>;
  /** vLLM's continue_final_message: the last message is left open, to be continued (transformers' way). */
  continueFinalMessage?: boolean;
  /** A template of the request's own (vLLM's chat_template), used instead of the model's. */
  chatTemplate?: string;
}

export interface ChatTemplate {
  readonly source: string;
  /** The tokenizer_config.json it was built from, so that worker threads can build the same one. */
  readonly tokenizerConfig: Readonly<Record<string, unknown>>;
  render(messages: ChatMessage[], options?: RenderOptions): string;
}

/** A template that failed to render for the given messages; the server answers 400 with its message. */
export class TemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateError';
  }
}

/**
 * chat_template may be a string, or (as some tokenizer configs ship it) a list of
 * {name, template}; the one named "default" is used, tool_use when tools are given and present.
 */
function pickSource(value: unknown, wantTools: boolean): string | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = new Map<string, string>();
    for (const entry of value) {
      if (entry && typeof entry.name === 'string' && typeof entry.template === 'string') named.set(entry.name, entry.template);
    }
    return (wantTools ? named.get('tool_use') : undefined) ?? named.get('default') ?? named.values().next().value;
  }
  return undefined;
}

function specialTokenString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return '';
}

/**
 * Builds the template from tokenizer_config.json; null when the model ships no chat template
 * (the server then refuses chat requests with a clear 400, as vLLM does).
 */
export function createChatTemplate(tokenizerConfig: Readonly<Record<string, unknown>>): ChatTemplate | null {
  const plain = pickSource(tokenizerConfig.chat_template, false);
  if (plain === undefined) return null;
  const withTools = pickSource(tokenizerConfig.chat_template, true) ?? plain;
  const compiled = new Map<string, Template>();
  const compile = (source: string): Template => {
    let template = compiled.get(source);
    if (!template) {
      try {
        template = new Template(source);
      } catch (err) {
        throw new Error(`chat_template does not parse: ${(err as Error).message}`);
      }
      compiled.set(source, template);
    }
    return template;
  };
  compile(plain);
  // OpenAI's `developer` role is the system message under a newer name. A template that does not know
  // it (Qwen3's renders only system, user, assistant and tool, and drops the rest) gets it as `system`:
  // first, it is the system prompt; after a system message, a system turn in its place.
  const knowsDeveloper = (source: string) => /["']developer["']/.test(source);
  const modelKnowsDeveloper = { plain: knowsDeveloper(plain), withTools: knowsDeveloper(withTools) };
  const asSystem = (messages: ChatMessage[]) =>
    messages.map((m) => (m.role === 'developer' ? { ...m, role: 'system' } : m));
  const globals = {
    bos_token: specialTokenString(tokenizerConfig.bos_token),
    eos_token: specialTokenString(tokenizerConfig.eos_token),
    pad_token: specialTokenString(tokenizerConfig.pad_token),
    unk_token: specialTokenString(tokenizerConfig.unk_token),
  };
  return {
    source: plain,
    tokenizerConfig,
    render(messages, options = {}) {
      const hasTools = options.tools !== undefined && options.tools.length > 0;
      const template = options.chatTemplate !== undefined ? requestTemplate(options.chatTemplate) : compile(hasTools ? withTools : plain);
      let text: string;
      try {
        text = template.render({
          ...globals,
          ...options.kwargs,
          messages: (options.chatTemplate !== undefined ? knowsDeveloper(options.chatTemplate) : hasTools ? modelKnowsDeveloper.withTools : modelKnowsDeveloper.plain)
            ? messages
            : asSystem(messages),
          // The template tests `if tools`: an absent list must read as false, not [].
          ...(hasTools ? { tools: options.tools } : {}),
          add_generation_prompt: options.addGenerationPrompt ?? true,
        });
      } catch (err) {
        throw new TemplateError(`chat template error: ${(err as Error).message}`);
      }
      return options.continueFinalMessage ? openFinalMessage(text, messages) : text;
    },
  };
}

/** A request's own template, compiled for this render only (not cached: each request may send another). */
function requestTemplate(source: string): Template {
  try {
    return new Template(source);
  } catch (err) {
    throw new TemplateError(`chat_template does not parse: ${(err as Error).message}`);
  }
}

/**
 * The rendered conversation cut right after the last message's text, so that its end-of-turn markup is
 * gone and the model continues it: transformers' continue_final_message, which vLLM uses.
 */
function openFinalMessage(rendered: string, messages: readonly ChatMessage[]): string {
  const final = messages.at(-1)?.content ?? '';
  const trimmed = final.trim();
  if (trimmed === '') throw new TemplateError('continue_final_message: the final message has no text to continue');
  const at = rendered.lastIndexOf(trimmed);
  if (at < 0) {
    throw new TemplateError('continue_final_message: the final message does not appear in the rendered chat (the chat template changes its text)');
  }
  const lead = final.trimStart();
  // The template kept the message's trailing whitespace: keep it too; else cut after its last non-space.
  return rendered.slice(0, at) + (rendered.slice(at, at + lead.length) === final ? lead : trimmed);
}
