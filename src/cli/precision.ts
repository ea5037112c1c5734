// --dtype and --kv-cache-dtype (vLLM's flag names): the arithmetic the model runs in. Pure functions, unit-tested.
//
// 'bfloat16' (the default for bf16 checkpoints, as llama.cpp and vLLM run them): the CPU's matmuls on bf16
// weights round their activations to bf16 and multiply on vdpbf16ps (the router stays exact), and the KV cache
// is bf16. 'float32' is the exact mode: activations as they are in f32 fmas, f32 KV on the CPU; the parity
// tests against llama.cpp's F32 GGUFs (0.02 nats) and transformers in float64 run it. On the generated test
// models (logits of std 10) bf16 arithmetic of any engine moves top-5 logprobs by 0.03-0.15 nats from f32
// (llama.cpp's own BF16 path included), so only the exact mode is held to 0.02 nats.
import type { BackendName, WeightDType } from '../native/addon-types.ts';

export const DTYPE_CHOICES = ['auto', 'bfloat16', 'float32'] as const;
export type Dtype = 'bfloat16' | 'float32';

/** The KV cache's storage (--kv-cache-dtype). The CUDA backend stores bf16 only. */
export type KvCacheDtype = 'bf16' | 'f32';
export const KV_CACHE_DTYPE_CHOICES = ['auto', 'bf16', 'f32'] as const;

/** --dtype → the arithmetic: 'auto' is 'float32' for a float32 checkpoint, else 'bfloat16'. */
export function resolveDtype(choice: (typeof DTYPE_CHOICES)[number] | undefined, checkpoint: WeightDType): Dtype {
  if (choice === 'bfloat16' || choice === 'float32') return choice;
  return checkpoint === 'f32' ? 'float32' : 'bfloat16';
}

/**
 * --kv-cache-dtype → the storage. 'auto' follows --dtype on the CPU (bf16, or f32 for 'float32') and is bf16 on
 * CUDA, where f32 is an error naming the flag.
 */
export function resolveKvCacheDtype(choice: (typeof KV_CACHE_DTYPE_CHOICES)[number] | undefined, backend: BackendName, dtype: Dtype): KvCacheDtype {
  const kv = choice === 'f32' || choice === 'bf16' ? choice : backend === 'cpu' && dtype === 'float32' ? 'f32' : 'bf16';
  if (kv === 'f32' && backend === 'cuda') {
    throw new Error('--kv-cache-dtype f32 is for the CPU backend: the CUDA backend keeps its KV cache in bf16 (--kv-cache-dtype auto or bf16)');
  }
  return kv;
}

/** The addon's `activations` for a dtype. */
export function activationsOf(dtype: Dtype): 'bf16' | 'f32' {
  return dtype === 'bfloat16' ? 'bf16' : 'f32';
}
