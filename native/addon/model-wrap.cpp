#include "addon/model-wrap.h"

#include <stdexcept>

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

Napi::Function ModelWrap::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "NativeModel",
                                    {InstanceMethod("step", &ModelWrap::Step), InstanceMethod("close", &ModelWrap::Close),
                                     InstanceAccessor("kvBlocks", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(0)),
                                     InstanceAccessor("blockSize", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(1)),
                                     InstanceAccessor("kvBytesPerToken", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(2)),
                                     InstanceAccessor("weightBytes", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(3)),
                                     InstanceAccessor("weightsLocked", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(4)),
                                     InstanceAccessor("lockError", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(5)),
                                     InstanceAccessor("codedWeights", &ModelWrap::Getter, nullptr, napi_enumerable,
                                                      reinterpret_cast<void*>(6))});
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
  switch (reinterpret_cast<intptr_t>(info.Data())) {
    case 0: return Napi::Number::New(env, model_->kv_blocks());
    case 1: return Napi::Number::New(env, model_->block_size());
    case 2: return Napi::Number::New(env, static_cast<double>(model_->backend().kv_bytes_per_token()));
    case 3: return Napi::Number::New(env, static_cast<double>(model_->weights().bytes));
    case 4: return Napi::Boolean::New(env, model_->weights().locked);
    case 6: {
      const ModelWeights& w = model_->weights();
      Napi::Object o = Napi::Object::New(env);
      o.Set("matrices", Napi::Number::New(env, static_cast<double>(w.coded.size())));
      o.Set("sourceBytes", Napi::Number::New(env, static_cast<double>(w.coded_source_bytes)));
      o.Set("codedBytes", Napi::Number::New(env, static_cast<double>(w.coded_bytes)));
      o.Set("escapes", Napi::Number::New(env, static_cast<double>(w.coded_escapes)));
      return o;
    }
    default:
      return model_->weights().lock_error.empty() ? env.Undefined() : Napi::String::New(env, model_->weights().lock_error);
  }
}

}  // namespace moe
