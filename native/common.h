// Shared pieces of the addon: tensor handles, argument conversion, op registration.
#pragma once

#include <napi.h>
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace diffuse {

// A tensor handle is a JS External naming a Holder, a slot of its environment's
// handle table that owns one at::Tensor (see addon.cc). dispose() resets `t` at once
// and frees the slot; handles of disposed tensors resolve to a Holder whose `t` is
// undefined. The External's value is not a pointer: read handles only through
// holderArg/tensorArg/tensorListArg/holderFrom, never Napi::External<...>::Data().
struct Holder {
  at::Tensor t;
  int64_t bytes = 0;         // host bytes this handle reported to V8 (0 unless handed to the GC)
  const void* storage = nullptr;
  uint64_t gen = 1;          // bumped when the slot is freed: older handles are stale
  uint32_t index = 0;        // the slot's place in the table
};

// Wraps a tensor in a new handle (undefined tensors become JS null).
Napi::Value wrap(Napi::Env env, at::Tensor t);
// The tensor behind a handle; throws a clear error for disposed tensors.
const at::Tensor& tensorArg(const Napi::CallbackInfo& info, size_t i);
// Same, but null/undefined give an undefined tensor (optional arguments).
at::Tensor optTensorArg(const Napi::CallbackInfo& info, size_t i);
Holder* holderArg(const Napi::CallbackInfo& info, size_t i);
// The Holder behind a tensor handle `v` (an External); never null.
Holder* holderFrom(napi_env env, const Napi::Value& v);
std::vector<at::Tensor> tensorListArg(const Napi::CallbackInfo& info, size_t i);
Napi::Value wrapList(Napi::Env env, const std::vector<at::Tensor>& ts);
// Releases the tensor now; idempotent.
void release(Napi::Env env, Holder* h);

// dtype codes shared with src/engine/dtype.ts.
at::ScalarType dtypeArg(const Napi::CallbackInfo& info, size_t i);
int dtypeCode(at::ScalarType t);
at::ScalarType dtypeFromCode(int code);

int64_t intArg(const Napi::CallbackInfo& info, size_t i);
double numArg(const Napi::CallbackInfo& info, size_t i);
bool boolArg(const Napi::CallbackInfo& info, size_t i, bool fallback = false);
std::string strArg(const Napi::CallbackInfo& info, size_t i);
std::vector<int64_t> intsArg(const Napi::CallbackInfo& info, size_t i);
c10::optional<double> optNumArg(const Napi::CallbackInfo& info, size_t i);
bool isNullish(const Napi::Value& v);
at::Scalar scalarArg(const Napi::CallbackInfo& info, size_t i);
at::Device deviceArg(const Napi::CallbackInfo& info, size_t i);
at::TensorOptions optionsArg(const Napi::CallbackInfo& info, size_t dtypeIdx, size_t deviceIdx);
c10::optional<at::Generator> generatorArg(const Napi::CallbackInfo& info, size_t i);

// An exported native function; errors thrown inside become JS Errors named after `name`.
using NativeFn = Napi::Value (*)(const Napi::CallbackInfo&);
struct Registry {
  std::vector<std::pair<const char*, NativeFn>> fns;
  void add(const char* name, NativeFn fn) { fns.emplace_back(name, fn); }
};

// Op families register themselves here (one function per source file).
void registerCreate(Registry& r);
void registerOps(Registry& r);
void registerNN(Registry& r);
void registerAutograd(Registry& r);
void registerOptim(Registry& r);
void registerProfile(Registry& r);
void registerDist(Registry& r);

// Ops dispatched by a name table (unary, binary, reductions) report the specific op
// name in errors by setting this before calling into ATen.
extern thread_local const char* currentOp;

}  // namespace diffuse
