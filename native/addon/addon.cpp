// Module entry: backends(), loadModel(options) → Promise<NativeModel>. See src/native/addon-types.ts.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "addon/js-convert.h"
#include "addon/model-wrap.h"
#include "core/backend-factory.h"
#include "core/dummy-weights.h"
#include "core/model.h"
#include "cpu/kernels.h"

namespace moe {
namespace {

constexpr const char* kVersion = "0.1.0";

// What loadModel was asked for (LoadOptions of src/native/addon-types.ts), read on the JS thread.
struct LoadSpec {
  std::vector<std::string> files;
  ModelConfig cfg;
  bool dummy = false;
  BackendOptions backend;
  int max_tokens = 8192;
  int block_size = 16;
  // Exactly one sizes the KV pool (after the weights are placed): blocks, bytes, or a share of device memory.
  int kv_blocks = 0;
  double kv_bytes = 0, gpu_utilization = 0;
  bool lock = false, code = true;
};

// The KV pool's blocks for what the placed backend reports.
int kv_blocks_for(const LoadSpec& s, const Backend& be) {
  if (s.kv_blocks > 0) return s.kv_blocks;
  const double per_block = static_cast<double>(be.kv_bytes_per_token()) * s.block_size;
  double budget = s.kv_bytes;
  std::string source = "kvCacheBytes";
  if (s.gpu_utilization > 0) {
    const MemoryInfo m = be.memory();
    if (!m.has_device) throw std::runtime_error("gpuMemoryUtilization applies to a device backend; size the CPU's KV cache with kvCacheBytes or kvBlocks");
    // vLLM's meaning: this share of the device for everything of ours; what is in use now (our weights and
    // workspace, and anything else on the device) is taken off it.
    budget = s.gpu_utilization * static_cast<double>(m.total) - static_cast<double>(m.total - m.free);
    source = "gpuMemoryUtilization " + std::to_string(s.gpu_utilization) + " of " + m.device_name + "'s " +
             std::to_string(m.total >> 20) + " MiB (" + std::to_string(m.free >> 20) + " MiB free after the weights)";
  }
  const double blocks = budget > 0 ? std::floor(budget / per_block) : 0;
  if (blocks < 1) throw std::runtime_error("the KV cache gets no block: " + source + " leaves no room (a block is " + std::to_string(static_cast<size_t>(per_block)) + " bytes)");
  return static_cast<int>(std::min<double>(blocks, 1 << 30));
}

// Maps and validates the checkpoint (or shapes dummy weights), builds the backend, places the weights on it
// (paging in or uploading, with progress), reserves the workspace, then sizes and allocates the KV pool.
class LoadWorker : public Napi::AsyncProgressWorker<double> {
 public:
  LoadWorker(Napi::Env env, LoadSpec spec, Napi::Function on_progress)
      : Napi::AsyncProgressWorker<double>(env), deferred_(Napi::Promise::Deferred::New(env)), spec_(std::move(spec)) {
    if (!on_progress.IsEmpty()) progress_ = Napi::Persistent(on_progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    try {
      ModelWeights w = spec_.dummy ? dummy_weights(spec_.cfg) : load_weights(spec_.files, spec_.cfg);
      std::unique_ptr<Backend> be = make_backend(spec_.backend);
      PlaceOptions po;
      po.code_bf16 = spec_.code;
      po.mlock = spec_.lock;
      po.progress = [&](double done, double total) {
        total_ = total;
        progress.Send(&done, 1);
      };
      be->place_weights(spec_.cfg, std::move(w), po);
      be->reserve(spec_.max_tokens);
      const int blocks = kv_blocks_for(spec_, *be);
      model_ = std::make_shared<Model>(spec_.cfg, std::move(be), blocks, spec_.block_size);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnProgress(const double* data, size_t) override {
    if (progress_.IsEmpty()) return;
    Napi::HandleScope scope(Env());
    progress_.Call({Napi::Number::New(Env(), *data), Napi::Number::New(Env(), total_)});
  }
  void OnOK() override { deferred_.Resolve(ModelWrap::Create(Env(), model_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  LoadSpec spec_;
  Napi::FunctionReference progress_;
  std::atomic<double> total_{0};
  std::shared_ptr<Model> model_;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = Napi::Promise::Deferred::New(env);
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "loadModel(options) needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    LoadSpec s;
    Napi::Value cfg_v = o.Get("config");
    if (!cfg_v.IsObject()) throw Napi::TypeError::New(env, "options.config must be an object");
    s.cfg = config_from_js(cfg_v.As<Napi::Object>());
    auto str_opt = [&](const char* name, const char* fallback) {
      Napi::Value v = o.Get(name);
      if (v.IsUndefined()) return std::string(fallback);
      if (!v.IsString()) throw Napi::TypeError::New(env, std::string("options.") + name + " must be a string");
      return v.As<Napi::String>().Utf8Value();
    };
    const std::string format = str_opt("loadFormat", "safetensors");
    if (format != "safetensors" && format != "dummy") throw Napi::TypeError::New(env, "options.loadFormat must be 'safetensors' or 'dummy'");
    s.dummy = format == "dummy";
    Napi::Value files_v = o.Get("files");
    if (!s.dummy || !files_v.IsUndefined()) {
      if (!files_v.IsArray()) throw Napi::TypeError::New(env, "options.files must be an array of paths");
      Napi::Array arr = files_v.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); i++) s.files.push_back(arr.Get(i).ToString().Utf8Value());
    }
    auto int_opt = [&](const char* name, int lo, int fallback) {
      Napi::Value v = o.Get(name);
      if (v.IsUndefined() && fallback >= lo) return fallback;
      if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("options.") + name + " must be a number");
      const double x = v.As<Napi::Number>().DoubleValue();
      if (!(x >= lo) || x > 2147483647.0 || x != std::floor(x)) {
        throw Napi::RangeError::New(env, std::string("options.") + name + " must be an integer >= " + std::to_string(lo));
      }
      return static_cast<int>(x);
    };
    s.backend.kind = str_opt("backend", "cpu");
    s.backend.cpu_kernels = str_opt("cpuKernels", "");
    // Default: the backend's own (bf16 on CUDA; f32 on the CPU, the exact mode: the CLI picks, src/cli/precision.ts).
    const std::string kv_dtype = str_opt("kvCacheDtype", s.backend.kind == "cuda" ? "bf16" : "f32");
    if (kv_dtype != "bf16" && kv_dtype != "f32") throw Napi::TypeError::New(env, "options.kvCacheDtype must be 'bf16' or 'f32'");
    s.backend.kv_dtype = kv_dtype == "f32" ? DType::F32 : DType::BF16;
    // Default f32: the exact mode (the CLI's --dtype picks bf16 for bf16 checkpoints; src/cli/precision.ts).
    const std::string activations = str_opt("activations", "f32");
    if (activations != "bf16" && activations != "f32") throw Napi::TypeError::New(env, "options.activations must be 'bf16' or 'f32'");
    s.backend.bf16_activations = activations == "bf16";
    s.backend.threads = int_opt("threads", 1, -1);
    s.backend.device = int_opt("device", 0, 0);
    s.max_tokens = int_opt("maxNumBatchedTokens", 1, 8192);
    s.block_size = int_opt("blockSize", 1, -1);
    int sizes = 0;
    if (!o.Get("kvBlocks").IsUndefined()) s.kv_blocks = int_opt("kvBlocks", 1, -1), sizes++;
    auto pos_opt = [&](const char* name, double hi) {
      Napi::Value v = o.Get(name);
      const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(x > 0 && x <= hi)) throw Napi::RangeError::New(env, std::string("options.") + name + " must be a number in (0, " + (hi > 1 ? "2^53" : "1") + "]");
      return x;
    };
    if (!o.Get("kvCacheBytes").IsUndefined()) s.kv_bytes = pos_opt("kvCacheBytes", 9007199254740992.0), sizes++;
    if (!o.Get("gpuMemoryUtilization").IsUndefined()) s.gpu_utilization = pos_opt("gpuMemoryUtilization", 1.0), sizes++;
    if (sizes != 1) throw Napi::TypeError::New(env, "give exactly one of options.kvBlocks, options.kvCacheBytes, options.gpuMemoryUtilization");
    s.lock = o.Get("mlock").ToBoolean().Value();
    // Coding bf16 weights is on unless codeWeights is false.
    s.code = !o.Get("codeWeights").IsBoolean() || o.Get("codeWeights").ToBoolean().Value();
    Napi::Value prog = o.Get("onProgress");
    Napi::Function on_progress = prog.IsFunction() ? prog.As<Napi::Function>() : Napi::Function();
    auto* w = new LoadWorker(env, std::move(s), on_progress);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  } catch (const Napi::Error& e) {
    d.Reject(e.Value());
    return d.Promise();
  }
}

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("name", "cpu");
  cpu.Set("available", true);
  cpu.Set("simd", cpu_simd_level());
  cpu.Set("kernels", select_kernels().name);
  cpu.Set("threads", Napi::Number::New(env, std::thread::hardware_concurrency()));
  out.Set(0u, cpu);
  const CudaInfo ci = cuda_info();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("name", "cuda");
  cuda.Set("compiled", ci.compiled);
  if (ci.compiled) cuda.Set("archs", ci.archs);
  cuda.Set("available", ci.usable);
  if (!ci.usable) cuda.Set("detail", ci.why_not);
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ci.devices.size(); i++) {
    const CudaDeviceInfo& dv = ci.devices[i];
    Napi::Object d = Napi::Object::New(env);
    d.Set("ordinal", dv.ordinal);
    d.Set("name", dv.name);
    d.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(dv.total_memory)));
    d.Set("computeCapability", std::to_string(dv.major) + "." + std::to_string(dv.minor));
    devices.Set(static_cast<uint32_t>(i), d);
  }
  cuda.Set("devices", devices);
  out.Set(1u, cuda);
  return out;
}

}  // namespace
}  // namespace moe

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  using namespace moe;
  exports.Set("version", Napi::String::New(env, kVersion));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  ModelWrap::Init(env);
  return exports;
}

NODE_API_MODULE(moeserve, InitModule)
