// The Qwen3 chat template sources the chat-template goldens are rendered with, derived exactly as
// tests/fixtures/chat-template/render-reference.py derives them, and the hash the fixtures record.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';

export const qwen3Config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8')) as Record<string, unknown>;

const qwen3 = qwen3Config.chat_template as string;

/** By the name a fixture's "template" field gives. */
export const QWEN3_TEMPLATE_SOURCES = {
  qwen3,
  // Thinking models (Qwen3 2507 Thinking, DeepResearch): the generation prompt opens <think>.
  'qwen3-thinking': qwen3.replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"),
} as const;

export type Qwen3TemplateName = keyof typeof QWEN3_TEMPLATE_SOURCES;

/** As render-reference.py writes "templateSha256": sha256 of the UTF-8 source, hex. */
export function templateSha256(source: string): string {
  return createHash('sha256').update(source, 'utf8').digest('hex');
}

export const RERENDER_GOLDENS = 'python3 tests/fixtures/chat-template/render-reference.py';
