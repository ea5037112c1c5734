// NativeModel of src/native/addon-types.ts: owns a Model; step() runs on a worker thread, one at a time.
#pragma once
#include <napi.h>

#include <memory>

#include "core/model.h"

namespace moe {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps a loaded model in a new JS object (constructor stored at Init).
  static Napi::Object Create(Napi::Env env, std::shared_ptr<Model> model);
  explicit ModelWrap(const Napi::CallbackInfo& info);

  // Called by the step worker when it finishes (on the JS thread).
  void step_done() { busy_ = false; }

 private:
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Getter(const Napi::CallbackInfo& info);

  std::shared_ptr<Model> model_;
  bool busy_ = false;
};

}  // namespace moe
