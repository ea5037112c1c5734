// `moeserve make-model OUT_DIR`: a random-weight Qwen3-MoE checkpoint of any shape, in Hugging Face layout.
import path from 'node:path';
import { Command } from 'commander';
import { MAKE_MODEL_DEFAULTS, makeModel, type MakeModelDType, type MakeModelOptions } from '../model/make-model.ts';
import { choiceArg, intArg, intListArg, positiveNumberArg } from './options.ts';
import { byteProgress } from './progress.ts';

interface MakeModelFlags {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  experts: number;
  topK: number;
  moeIntermediate: number;
  intermediate: number;
  vocab: number;
  seed: number;
  dtype: MakeModelDType;
  mlpOnlyLayers: number[];
  decoderSparseStep: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  normTopkProb: boolean;
  tieWordEmbeddings: boolean;
  shards: number;
}

export function makeModelCommand(): Command {
  const d = MAKE_MODEL_DEFAULTS;
  return new Command('make-model')
    .description('write a random-weight Qwen3-MoE checkpoint (config.json, safetensors, the real Qwen3 tokenizer)')
    .argument('<OUT_DIR>', 'directory to write (created if missing)')
    .option('--layers <n>', 'num_hidden_layers', intArg(1), d.layers)
    .option('--hidden <n>', 'hidden_size', intArg(1), d.hidden)
    .option('--heads <n>', 'num_attention_heads', intArg(1), d.heads)
    .option('--kv-heads <n>', 'num_key_value_heads', intArg(1), d.kvHeads)
    .option('--head-dim <n>', 'head_dim (even)', intArg(2), d.headDim)
    .option('--experts <n>', 'num_experts (0: every layer dense)', intArg(0), d.experts)
    .option('--top-k <n>', 'num_experts_per_tok', intArg(1), d.topK)
    .option('--moe-intermediate <n>', 'moe_intermediate_size', intArg(1), d.moeIntermediate)
    .option('--intermediate <n>', 'intermediate_size (dense MLP layers)', intArg(1), d.intermediate)
    .option('--vocab <n>', 'vocab_size', intArg(1), d.vocab)
    .option('--seed <n>', 'random seed (same seed, same weights)', intArg(0), d.seed)
    .option('--dtype <dtype>', 'weight dtype: bf16, f16 or f32', choiceArg(['bf16', 'f16', 'f32'] as const), d.dtype)
    .option('--mlp-only-layers <list>', 'comma-separated layer indices with a dense MLP, e.g. 0,3', intListArg, d.mlpOnlyLayers)
    .option('--decoder-sparse-step <n>', 'decoder_sparse_step', intArg(1), d.decoderSparseStep)
    .option('--max-position-embeddings <n>', 'max_position_embeddings', intArg(2), d.maxPositionEmbeddings)
    .option('--rope-theta <x>', 'rope_theta', positiveNumberArg, d.ropeTheta)
    .option('--no-norm-topk-prob', 'do not renormalise the top-k router weights')
    .option('--tie-word-embeddings', 'share embed_tokens with lm_head', d.tieWordEmbeddings)
    .option('--shards <n>', 'number of safetensors files (>1: shards + model.safetensors.index.json)', intArg(1), d.shards)
    .action(async (outDir: string, flags: MakeModelFlags) => {
      const options: MakeModelOptions = { ...flags };
      const out = path.resolve(outDir);
      const progress = byteProgress('writing weights');
      try {
        await makeModel(out, { ...options, onProgress: (done, total) => progress.update(done, total) });
      } finally {
        progress.stop();
      }
      console.log(`wrote ${out}`);
    });
}
