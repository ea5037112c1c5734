#include "addon/js-convert.h"

#include <cmath>
#include <type_traits>

namespace moe {
namespace {

Napi::Value field(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) throw Napi::TypeError::New(o.Env(), std::string("missing field ") + name);
  return v;
}

int int_field(const Napi::Object& o, const char* name) {
  Napi::Value v = field(o, name);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(name) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > 2147483647.0) {
    throw Napi::RangeError::New(o.Env(), std::string(name) + " must be a non-negative integer");
  }
  return static_cast<int>(d);
}

template <typename T>
std::vector<T> array_field(const Napi::Object& o, const char* name) {
  Napi::Value v = field(o, name);
  if (!v.IsTypedArray()) throw Napi::TypeError::New(o.Env(), std::string(name) + " must be a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  const napi_typedarray_type want = std::is_same<T, float>::value      ? napi_float32_array
                                    : std::is_same<T, int32_t>::value  ? napi_int32_array
                                    : std::is_same<T, uint32_t>::value ? napi_uint32_array
                                                                       : napi_uint8_array;
  if (ta.TypedArrayType() != want) throw Napi::TypeError::New(o.Env(), std::string(name) + " has the wrong typed array type");
  Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

// An optional typed array: empty when absent (undefined or null).
template <typename T>
std::vector<T> optional_array(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return {};
  return array_field<T>(o, name);
}

}  // namespace

ModelConfig config_from_js(const Napi::Object& o) {
  ModelConfig c;
  c.hidden = int_field(o, "hiddenSize");
  c.layers = int_field(o, "numLayers");
  c.heads = int_field(o, "numHeads");
  c.kv_heads = int_field(o, "numKvHeads");
  c.head_dim = int_field(o, "headDim");
  c.vocab = int_field(o, "vocabSize");
  c.intermediate = int_field(o, "intermediateSize");
  c.moe_intermediate = int_field(o, "moeIntermediateSize");
  c.experts = int_field(o, "numExperts");
  c.top_k = int_field(o, "numExpertsPerTok");
  c.norm_topk_prob = field(o, "normTopkProb").ToBoolean();
  c.tie_word_embeddings = field(o, "tieWordEmbeddings").ToBoolean();
  c.rms_eps = field(o, "rmsNormEps").ToNumber().FloatValue();
  c.rope_attention_factor = field(o, "ropeAttentionFactor").ToNumber().FloatValue();
  Napi::Value ml = field(o, "moeLayers");
  if (!ml.IsArray()) throw Napi::TypeError::New(o.Env(), "moeLayers must be an array");
  Napi::Array arr = ml.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) c.moe_layers.push_back(arr.Get(i).ToBoolean());
  c.rope_inv_freq = array_field<float>(o, "ropeInvFreq");
  const Napi::Env env = o.Env();
  if (c.hidden <= 0 || c.layers <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.head_dim <= 0 || c.vocab <= 0) {
    throw Napi::RangeError::New(env, "model dimensions must be positive");
  }
  if (c.heads % c.kv_heads != 0) throw Napi::RangeError::New(env, "numHeads must be a multiple of numKvHeads");
  if (static_cast<int>(c.moe_layers.size()) != c.layers) throw Napi::RangeError::New(env, "moeLayers must have numLayers entries");
  if (static_cast<int>(c.rope_inv_freq.size()) * 2 != c.head_dim) throw Napi::RangeError::New(env, "ropeInvFreq must have headDim/2 entries");
  for (bool m : c.moe_layers) {
    if (m && (c.experts <= 0 || c.top_k <= 0 || c.top_k > c.experts || c.moe_intermediate <= 0)) {
      throw Napi::RangeError::New(env, "MoE layers need numExperts > 0, 1 <= numExpertsPerTok <= numExperts, moeIntermediateSize > 0");
    }
    if (!m && c.intermediate <= 0) throw Napi::RangeError::New(env, "dense layers need intermediateSize > 0");
  }
  return c;
}

StepInput step_from_js(const Napi::Object& o) {
  StepInput s;
  s.tokens = array_field<int32_t>(o, "tokens");
  s.positions = array_field<int32_t>(o, "positions");
  s.seq_start = array_field<int32_t>(o, "seqStart");
  s.block_tables = array_field<int32_t>(o, "blockTables");
  s.block_table_width = int_field(o, "blockTableWidth");
  s.sample = array_field<uint8_t>(o, "sample");
  s.temperature = array_field<float>(o, "temperature");
  s.top_p = array_field<float>(o, "topP");
  s.top_k = array_field<int32_t>(o, "topK");
  s.uniform = array_field<float>(o, "uniform");
  s.num_logprobs = array_field<int32_t>(o, "numLogprobs");
  s.prompt_logprobs = array_field<int32_t>(o, "promptLogprobs");
  s.targets = array_field<int32_t>(o, "targets");
  s.min_p = optional_array<float>(o, "minP");
  s.presence_penalty = optional_array<float>(o, "presencePenalty");
  s.frequency_penalty = optional_array<float>(o, "frequencyPenalty");
  s.repetition_penalty = optional_array<float>(o, "repetitionPenalty");
  s.output_start = optional_array<int32_t>(o, "outputTokenStart");
  s.output_ids = optional_array<int32_t>(o, "outputTokenIds");
  s.output_counts = optional_array<int32_t>(o, "outputTokenCounts");
  s.prompt_start = optional_array<int32_t>(o, "promptTokenStart");
  s.prompt_ids = optional_array<int32_t>(o, "promptTokenIds");
  s.bias_start = optional_array<int32_t>(o, "biasStart");
  s.bias_ids = optional_array<int32_t>(o, "biasIds");
  s.bias_values = optional_array<float>(o, "biasValues");
  s.allowed_mask = optional_array<uint32_t>(o, "allowedMask");
  s.has_mask = optional_array<uint8_t>(o, "hasMask");
  if (s.seq_start.size() < 2) throw Napi::RangeError::New(o.Env(), "seqStart must have at least 2 entries");
  return s;
}

Napi::Object step_to_js(Napi::Env env, const StepOutput& out) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("tokens", to_typed_array(env, out.tokens));
  o.Set("logprobs", to_typed_array(env, out.logprobs));
  o.Set("topWidth", Napi::Number::New(env, out.top_width));
  o.Set("topIds", to_typed_array(env, out.top_ids));
  o.Set("topLogprobs", to_typed_array(env, out.top_logprobs));
  o.Set("promptTopWidth", Napi::Number::New(env, out.prompt_top_width));
  o.Set("targetLogprobs", to_typed_array(env, out.target_logprobs));
  o.Set("promptTopIds", to_typed_array(env, out.prompt_top_ids));
  o.Set("promptTopLogprobs", to_typed_array(env, out.prompt_top_logprobs));
  return o;
}

}  // namespace moe
