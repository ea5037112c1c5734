// Reading the plain JS shapes of src/native/addon-types.ts into C++ values, with errors that name the field.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "core/config.h"
#include "core/step-io.h"

namespace moe {

ModelConfig config_from_js(const Napi::Object& o);
StepInput step_from_js(const Napi::Object& o);
Napi::Object step_to_js(Napi::Env env, const StepOutput& out);

template <typename T>
Napi::TypedArrayOf<T> to_typed_array(Napi::Env env, const std::vector<T>& v) {
  auto a = Napi::TypedArrayOf<T>::New(env, v.size());
  std::copy(v.begin(), v.end(), a.Data());
  return a;
}

}  // namespace moe
