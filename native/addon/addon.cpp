// Module entry: backends(), loadModel(options) → Promise<NativeModel>. See src/native/addon-types.ts.
#include <napi.h>

#include <thread>

#include "addon/js-convert.h"
#include "addon/model-wrap.h"
#include "core/model.h"
#include "cpu/backend-cpu.h"

namespace moe {
namespace {

constexpr const char* kVersion = "0.1.0";

// Validates and maps the checkpoint, touches every weight page (reporting progress), then builds the model.
class LoadWorker : public Napi::AsyncProgressWorker<double> {
 public:
  LoadWorker(Napi::Env env, std::vector<std::string> files, ModelConfig cfg, int threads, int kv_blocks, int block_size,
             bool lock, bool code, Napi::Function on_progress)
      : Napi::AsyncProgressWorker<double>(env), deferred_(Napi::Promise::Deferred::New(env)), files_(std::move(files)),
        cfg_(std::move(cfg)), threads_(threads), kv_blocks_(kv_blocks), block_size_(block_size), lock_(lock), code_(code) {
    if (!on_progress.IsEmpty()) progress_ = Napi::Persistent(on_progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    try {
      ModelWeights w = load_weights(files_, cfg_);
      total_ = static_cast<double>(w.tensors->total_bytes());
      double done = 0, last = 0;
      volatile uint8_t sink = 0;
      for (const auto& f : w.tensors->files()) {
        f->advise_willneed();
        for (const auto& t : f->tensors()) {
          const uint8_t* p = static_cast<const uint8_t*>(t.data);
          for (size_t i = 0; i < t.nbytes; i += 4096) sink = sink + p[i];
          done += static_cast<double>(t.nbytes);
          if (done - last > total_ / 100 || done == total_) {
            last = done;
            progress.Send(&done, 1);
          }
        }
      }
      (void)sink;
      auto backend = std::make_unique<CpuBackend>(threads_);
      backend->prepare_weights(w, code_);
      // Locked pages are never reclaimed, so a weight idle for a while (an expert no recent token chose) is
      // not read back from disk when it is next needed. A failure is reported, not fatal (as llama.cpp's).
      if (lock_) lock_weights(w);
      model_ = std::make_shared<Model>(cfg_, std::move(w), std::move(backend), kv_blocks_, block_size_);
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
  std::vector<std::string> files_;
  ModelConfig cfg_;
  int threads_, kv_blocks_, block_size_;
  bool lock_, code_;
  Napi::FunctionReference progress_;
  double total_ = 0;
  std::shared_ptr<Model> model_;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = Napi::Promise::Deferred::New(env);
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "loadModel(options) needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    Napi::Value files_v = o.Get("files");
    if (!files_v.IsArray()) throw Napi::TypeError::New(env, "options.files must be an array of paths");
    std::vector<std::string> files;
    Napi::Array arr = files_v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) files.push_back(arr.Get(i).ToString().Utf8Value());
    Napi::Value cfg_v = o.Get("config");
    if (!cfg_v.IsObject()) throw Napi::TypeError::New(env, "options.config must be an object");
    ModelConfig cfg = config_from_js(cfg_v.As<Napi::Object>());
    auto int_opt = [&](const char* name, int lo) {
      Napi::Value v = o.Get(name);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("options.") + name + " must be a number");
      const int x = v.As<Napi::Number>().Int32Value();
      if (x < lo) throw Napi::RangeError::New(env, std::string("options.") + name + " must be >= " + std::to_string(lo));
      return x;
    };
    const int threads = int_opt("threads", 1), kv_blocks = int_opt("kvBlocks", 1), block_size = int_opt("blockSize", 1);
    const bool lock = o.Get("mlock").ToBoolean().Value();
    // Coding bf16 weights is on unless codeWeights is false.
    const bool code = !o.Get("codeWeights").IsBoolean() || o.Get("codeWeights").ToBoolean().Value();
    Napi::Value prog = o.Get("onProgress");
    Napi::Function on_progress = prog.IsFunction() ? prog.As<Napi::Function>() : Napi::Function();
    auto* w = new LoadWorker(env, std::move(files), std::move(cfg), threads, kv_blocks, block_size, lock, code, on_progress);
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
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("name", "cuda");
  cuda.Set("available", false);
  cuda.Set("detail", "not compiled in (the CUDA backend is not built yet)");
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
