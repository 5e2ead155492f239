// Autograd: gradients of scalars (backward) and vector-Jacobian products (grad).
#include "common.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

namespace diffuse {

// backward(t, grad|null, retainGraph, createGraph)
static Napi::Value backward(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  at::Tensor g = optTensorArg(info, 1);
  bool create = boolArg(info, 3);
  c10::optional<bool> retain;
  if (!isNullish(info[2])) retain = boolArg(info, 2);
  if (!t.requires_grad())
    throw std::invalid_argument("the tensor does not require grad: nothing to differentiate (did a noGrad scope or detach() cut the graph?)");
  torch::autograd::backward({t}, g.defined() ? torch::autograd::variable_list{g} : torch::autograd::variable_list{},
                            retain, create);
  return info.Env().Undefined();
}

// grad(outputs, inputs, gradOutputs|null, retainGraph, createGraph, allowUnused) -> (Tensor|null)[]
static Napi::Value grad(const Napi::CallbackInfo& info) {
  auto outputs = tensorListArg(info, 0);
  auto inputs = tensorListArg(info, 1);
  torch::autograd::variable_list gradOutputs;
  if (!isNullish(info[2])) gradOutputs = tensorListArg(info, 2);
  c10::optional<bool> retain;
  if (!isNullish(info[3])) retain = boolArg(info, 3);
  bool create = boolArg(info, 4);
  bool allowUnused = boolArg(info, 5);
  for (size_t i = 0; i < inputs.size(); i++)
    if (!inputs[i].requires_grad())
      throw std::invalid_argument("input " + std::to_string(i) + " does not require grad");
  auto gs = torch::autograd::grad(outputs, inputs, gradOutputs, retain, create, allowUnused);
  return wrapList(info.Env(), gs);
}

// gradOf(t) -> the accumulated .grad or null
static Napi::Value gradOf(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).grad());
}

// setGrad(t, g|null)
static Napi::Value setGrad(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.mutable_grad() = optTensorArg(info, 1);
  return info.Env().Undefined();
}

static Napi::Value requiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tensorArg(info, 0).requires_grad());
}

static Napi::Value setRequiresGrad(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.requires_grad_(boolArg(info, 1));
  return info.Env().Undefined();
}

static Napi::Value retainGrad(const Napi::CallbackInfo& info) {
  tensorArg(info, 0).retain_grad();
  return info.Env().Undefined();
}

static Napi::Value isLeaf(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tensorArg(info, 0).is_leaf());
}

// gradFn(t) -> the name of the node that made t ("" for leaves), to see into graphs.
static Napi::Value gradFn(const Napi::CallbackInfo& info) {
  const auto& fn = tensorArg(info, 0).grad_fn();
  return Napi::String::New(info.Env(), fn ? fn->name() : "");
}

static Napi::Value detach(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).detach());
}

void registerAutograd(Registry& r) {
  r.add("backward", backward);
  r.add("grad", grad);
  r.add("gradOf", gradOf);
  r.add("setGrad", setGrad);
  r.add("requiresGrad", requiresGrad);
  r.add("setRequiresGrad", setRequiresGrad);
  r.add("retainGrad", retainGrad);
  r.add("isLeaf", isLeaf);
  r.add("gradFn", gradFn);
  r.add("detach", detach);
}

}  // namespace diffuse
