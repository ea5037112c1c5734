#include "addon/model-wrap.h"

#include <stdexcept>
#include <vector>

#include "addon/js-convert.h"

namespace moe {
namespace {

Napi::FunctionReference* g_ctor = nullptr;

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Model> model, StepInput in, ModelWrap* owner, Napi::Object owner_obj)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), model_(std::move(model)),
        in_(std::move(in)), owner_(owner) {
    owner_ref_ = Napi::Persistent(owner_obj);  // keeps the wrapper alive while the step runs
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      out_ = model_->step(in_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    owner_->step_done();
    deferred_.Resolve(step_to_js(Env(), out_));
  }
  void OnError(const Napi::Error& e) override {
    owner_->step_done();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
  StepInput in_;
  StepOutput out_;
  ModelWrap* owner_;
  Napi::ObjectReference owner_ref_;
};

}  // namespace

// NativeModel's read-only properties, in the order of kProps.
enum Prop { kKvBlocks, kBlockSize, kKvBytesPerToken, kWeightBytes, kWeightsLocked, kLockError, kCodedWeights, kBackendName,
            kDeviceMemory, kWeightDeviceBytes, kMaxNumBatchedTokens };
constexpr const char* kProps[] = {"kvBlocks", "blockSize", "kvBytesPerToken", "weightBytes", "weightsLocked", "lockError",
                                  "codedWeights", "backendName", "deviceMemory", "weightDeviceBytes", "maxNumBatchedTokens"};

Napi::Function ModelWrap::Init(Napi::Env env) {
  std::vector<Napi::ClassPropertyDescriptor<ModelWrap>> props{InstanceMethod("step", &ModelWrap::Step),
                                                               InstanceMethod("close", &ModelWrap::Close)};
  for (size_t i = 0; i < sizeof(kProps) / sizeof(kProps[0]); i++) {
    props.push_back(InstanceAccessor(kProps[i], &ModelWrap::Getter, nullptr, napi_enumerable, reinterpret_cast<void*>(i)));
  }
  Napi::Function ctor = DefineClass(env, "NativeModel", props);
  g_ctor = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.SetInstanceData<Napi::FunctionReference>(g_ctor);
  return ctor;
}

Napi::Object ModelWrap::Create(Napi::Env env, std::shared_ptr<Model> model) {
  Napi::Object obj = g_ctor->New({});
  ModelWrap::Unwrap(obj)->model_ = std::move(model);
  return obj;
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}

Napi::Value ModelWrap::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto reject = [&](const std::string& msg) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(Napi::Error::New(env, msg).Value());
    return d.Promise();
  };
  if (!model_) return reject("model is closed");
  if (busy_) return reject("a step is already in flight");
  if (info.Length() < 1 || !info[0].IsObject()) return reject("step(batch) needs a batch object");
  StepInput in;
  try {
    in = step_from_js(info[0].As<Napi::Object>());
  } catch (const Napi::Error& e) {
    return reject(e.Message());
  }
  busy_ = true;
  auto* w = new StepWorker(env, model_, std::move(in), this, info.This().As<Napi::Object>());
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Value ModelWrap::Close(const Napi::CallbackInfo& info) {
  // A step in flight holds its own reference; the model is freed when that step ends.
  model_.reset();
  return info.Env().Undefined();
}

Napi::Value ModelWrap::Getter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!model_) return env.Undefined();
  const Backend& be = model_->backend();
  const WeightStats& w = be.weight_stats();
  auto num = [&](double x) { return Napi::Number::New(env, x); };
  switch (static_cast<Prop>(reinterpret_cast<intptr_t>(info.Data()))) {
    case kKvBlocks: return num(model_->kv_blocks());
    case kBlockSize: return num(model_->block_size());
    case kKvBytesPerToken: return num(static_cast<double>(be.kv_bytes_per_token()));
    case kWeightBytes: return num(static_cast<double>(w.bytes));
    case kWeightsLocked: return Napi::Boolean::New(env, w.locked);
    case kLockError: return w.lock_error.empty() ? env.Undefined() : Napi::String::New(env, w.lock_error);
    case kCodedWeights: {
      Napi::Object o = Napi::Object::New(env);
      o.Set("matrices", num(static_cast<double>(w.coded_matrices)));
      o.Set("sourceBytes", num(static_cast<double>(w.coded_source_bytes)));
      o.Set("codedBytes", num(static_cast<double>(w.coded_bytes)));
      o.Set("escapes", num(static_cast<double>(w.coded_escapes)));
      return o;
    }
    case kBackendName: return Napi::String::New(env, be.name());
    case kDeviceMemory: {
      const MemoryInfo m = be.memory();
      if (!m.has_device) return env.Undefined();
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", m.device_name);
      o.Set("totalBytes", num(static_cast<double>(m.total)));
      o.Set("freeBytes", num(static_cast<double>(m.free)));
      return o;
    }
    case kWeightDeviceBytes: return num(static_cast<double>(w.device_bytes));
    case kMaxNumBatchedTokens: return num(model_->max_tokens());
  }
  return env.Undefined();
}

}  // namespace moe
