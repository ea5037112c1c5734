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
      const template = compile(hasTools ? withTools : plain);
      try {
        return template.render({
          ...globals,
          ...options.kwargs,
          messages,
          // The template tests `if tools`: an absent list must read as false, not [].
          ...(hasTools ? { tools: options.tools } : {}),
          add_generation_prompt: options.addGenerationPrompt ?? true,
        });
      } catch (err) {
        throw new TemplateError(`chat template error: ${(err as Error).message}`);
      }
    },
  };
}
