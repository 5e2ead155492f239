// Optimizer and weight-averaging kernels over whole parameter lists: one native call
// updates every parameter, so a step costs the same number of N-API crossings for 4
// parameters or 400. The math is torch.optim's (PyTorch 1.13, single-tensor path),
// op for op, so trajectories match PyTorch's bit for bit on the CPU (float64 and float32,
// test/optim.test.ts). The _foreach_* ops run the same per-tensor kernels on the CPU
// and fuse launches on CUDA.
#include "common.h"

#include <cmath>
#include <map>
#include <numeric>

namespace diffuse {

namespace {

using TensorList = std::vector<at::Tensor>;

Holder* holderOf(const Napi::Value& v, const std::string& what) {
  if (!v.IsExternal()) throw std::invalid_argument(what + " is not a tensor");
  return holderFrom(v.Env(), v);
}

// Per-parameter step counts: a Float64Array the kernels advance in place for the
// parameters they update (so a parameter without a gradient keeps its count, as in
// PyTorch, where its state['step'] is not incremented).
double* stepsArg(const Napi::CallbackInfo& info, size_t i, size_t n) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw std::invalid_argument("argument " + std::to_string(i) + " must be a Float64Array of step counts");
  auto a = info[i].As<Napi::Float64Array>();
  if (a.ElementLength() != n)
    throw std::invalid_argument("step counts: " + std::to_string(a.ElementLength()) + " given for " +
                                std::to_string(n) + " parameters");
  return a.Data();
}

// A list argument whose length must equal the parameter count (state buffers).
TensorList listOf(const Napi::CallbackInfo& info, size_t i, size_t n, const char* what) {
  TensorList out = tensorListArg(info, i);
  if (out.size() != n)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(out.size()) + " tensors given for " +
                                std::to_string(n) + " parameters");
  return out;
}

// The gradients: when the argument is null, each parameter's own .grad (no JS handle is
// made for it); otherwise a list as long as params whose null entries mean "no gradient".
// Undefined entries are skipped by the kernels, as torch.optim skips `p.grad is None`.
TensorList gradsArg(const Napi::CallbackInfo& info, size_t i, const TensorList& params) {
  TensorList out(params.size());
  if (isNullish(info[i])) {
    for (size_t k = 0; k < params.size(); k++) out[k] = params[k].grad();
    return out;
  }
  if (!info[i].IsArray()) throw std::invalid_argument("argument " + std::to_string(i) + " must be an array of gradients or null");
  auto arr = info[i].As<Napi::Array>();
  if (arr.Length() != params.size())
    throw std::invalid_argument("gradients: " + std::to_string(arr.Length()) + " given for " +
                                std::to_string(params.size()) + " parameters");
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (isNullish(v)) continue;
    Holder* h = holderOf(v, "gradient " + std::to_string(k));
    if (!h->t.defined()) throw std::invalid_argument("gradient " + std::to_string(k) + " has been disposed");
    out[k] = h->t;
  }
  return out;
}

void checkGrads(const TensorList& params, const TensorList& grads) {
  for (size_t k = 0; k < params.size(); k++) {
    const at::Tensor& g = grads[k];
    if (!g.defined()) continue;
    if (g.is_sparse()) throw std::invalid_argument("parameter " + std::to_string(k) + " has a sparse gradient, which is not supported");
    if (!g.sizes().equals(params[k].sizes()))
      throw std::invalid_argument("parameter " + std::to_string(k) + " has shape " + c10::str(params[k].sizes()) +
                                  " but its gradient has shape " + c10::str(g.sizes()));
  }
}

// The gradient as the update sees it: negated for maximize, plus L2 weight decay
// (torch: `grad = -grad if maximize`, `grad = grad.add(param, alpha=weight_decay)`).
TensorList effectiveGrads(const TensorList& g, const TensorList& p, bool maximize, double l2) {
  TensorList d = maximize ? at::_foreach_neg(g) : g;
  if (l2 != 0) d = at::_foreach_add(d, p, l2);
  return d;
}

// Parameters updated together. On the CPU, one at a time: every op of a parameter's update
// then runs while its memory is in cache (a _foreach op is a loop over the tensors there
// anyway; measured 2-3x faster on 20 x 1M floats than op-by-op over the whole list). On an
// accelerator, all parameters of one device and dtype in one list: the _foreach fast path
// fuses their kernel launches. Either way the arithmetic per element is the same.
template <class Item>
std::vector<std::vector<Item*>> updateGroups(std::vector<Item>& items) {
  std::vector<std::vector<Item*>> out;
  std::map<std::pair<std::string, int>, size_t> where;
  for (auto& it : items) {
    if (it.p.device().is_cpu()) {
      out.push_back({&it});
      continue;
    }
    auto key = std::make_pair(it.p.device().str(), static_cast<int>(it.p.scalar_type()));
    auto found = where.find(key);
    if (found == where.end()) {
      where.emplace(key, out.size());
      out.push_back({&it});
    } else {
      out[found->second].push_back(&it);
    }
  }
  return out;
}

template <class Item>
TensorList gather(const std::vector<Item*>& group, at::Tensor Item::*field) {
  TensorList out;
  out.reserve(group.size());
  for (Item* it : group) out.push_back(it->*field);
  return out;
}

template <class Item>
std::vector<at::Scalar> gather(const std::vector<Item*>& group, double Item::*field) {
  std::vector<at::Scalar> out;
  out.reserve(group.size());
  for (Item* it : group) out.emplace_back(it->*field);
  return out;
}

struct SgdItem {
  at::Tensor p, g, buf;
  bool first;  // the parameter's first update: its momentum buffer starts as the gradient
};

struct AdamItem {
  at::Tensor p, g, m, v, vmax;
  double negStepSize, bc2Sqrt;
};

}  // namespace

// sgdStep(params, grads|null, momentumBufs|null, steps, lr, momentum, dampening, weightDecay, nesterov, maximize)
// torch.optim.SGD (1.13 _single_tensor_sgd): d = g + wd p; buf = d on a parameter's first
// step, else buf = momentum buf + (1 - dampening) d; d = nesterov ? d + momentum buf : buf;
// p -= lr d. momentumBufs (zero-initialised, one per parameter) is required when momentum != 0.
static Napi::Value sgdStep(const Napi::CallbackInfo& info) {
  at::NoGradGuard noGrad;
  TensorList params = tensorListArg(info, 0);
  const size_t n = params.size();
  TensorList grads = gradsArg(info, 1, params);
  double momentum = numArg(info, 5);
  TensorList bufs;
  if (momentum != 0) {
    if (isNullish(info[2])) throw std::invalid_argument("momentum != 0 needs momentum buffers");
    bufs = listOf(info, 2, n, "momentum buffers");
  }
  double* steps = stepsArg(info, 3, n);
  double lr = numArg(info, 4), dampening = numArg(info, 6), weightDecay = numArg(info, 7);
  bool nesterov = boolArg(info, 8), maximize = boolArg(info, 9);

  checkGrads(params, grads);  // before any state changes
  std::vector<SgdItem> items;
  for (size_t k = 0; k < n; k++) {
    if (!grads[k].defined()) continue;
    items.push_back({params[k], grads[k], momentum != 0 ? bufs[k] : at::Tensor(), steps[k] == 0});
    steps[k] += 1;
  }
  for (auto& group : updateGroups(items)) {
    TensorList p = gather(group, &SgdItem::p);
    TensorList d = effectiveGrads(gather(group, &SgdItem::g), p, maximize, weightDecay);
    if (momentum != 0) {
      TensorList b = gather(group, &SgdItem::buf), warmBufs, warmGrads;
      for (size_t j = 0; j < group.size(); j++) {
        if (group[j]->first) b[j].copy_(d[j]);  // torch: buf = clone(d_p) on the first step
        else {
          warmBufs.push_back(b[j]);
          warmGrads.push_back(d[j]);
        }
      }
      if (!warmBufs.empty()) {
        at::_foreach_mul_(warmBufs, momentum);
        at::_foreach_add_(warmBufs, warmGrads, 1 - dampening);
      }
      d = nesterov ? at::_foreach_add(d, b, momentum) : b;
    }
    at::_foreach_add_(p, d, -lr);
  }
  return info.Env().Undefined();
}

// adamStep(params, grads|null, expAvgs, expAvgSqs, maxExpAvgSqs|null, steps, lr, beta1, beta2, eps,
//          weightDecay, decoupled, amsgrad, maximize)
// torch.optim.Adam (decoupled = false: L2 decay folded into the gradient) and
// torch.optim.AdamW (decoupled = true: p *= 1 - lr wd first), 1.13 _single_tensor_adam(w):
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with v replaced by its running maximum for AMSGrad. t is each parameter's own step count.
static Napi::Value adamStep(const Napi::CallbackInfo& info) {
  at::NoGradGuard noGrad;
  TensorList params = tensorListArg(info, 0);
  const size_t n = params.size();
  TensorList grads = gradsArg(info, 1, params);
  TensorList expAvgs = listOf(info, 2, n, "exp_avg buffers");
  TensorList expAvgSqs = listOf(info, 3, n, "exp_avg_sq buffers");
  bool amsgrad = boolArg(info, 12);
  TensorList maxSqs;
  if (amsgrad) {
    if (isNullish(info[4])) throw std::invalid_argument("amsgrad needs max_exp_avg_sq buffers");
    maxSqs = listOf(info, 4, n, "max_exp_avg_sq buffers");
  }
  double* steps = stepsArg(info, 5, n);
  double lr = numArg(info, 6), beta1 = numArg(info, 7), beta2 = numArg(info, 8), eps = numArg(info, 9);
  double weightDecay = numArg(info, 10);
  bool decoupled = boolArg(info, 11), maximize = boolArg(info, 13);

  checkGrads(params, grads);  // before any state changes
  std::vector<AdamItem> items;
  for (size_t k = 0; k < n; k++) {
    if (!grads[k].defined()) continue;
    // Bias corrections at the parameter's own step, in double precision as Python computes them.
    double t = ++steps[k];
    double bc1 = 1 - std::pow(beta1, t), bc2 = 1 - std::pow(beta2, t);
    items.push_back({params[k], grads[k], expAvgs[k], expAvgSqs[k], amsgrad ? maxSqs[k] : at::Tensor(), -(lr / bc1), std::sqrt(bc2)});
  }
  for (auto& group : updateGroups(items)) {
    TensorList p = gather(group, &AdamItem::p), m = gather(group, &AdamItem::m), v = gather(group, &AdamItem::v);
    TensorList d = effectiveGrads(gather(group, &AdamItem::g), p, maximize, decoupled ? 0.0 : weightDecay);
    // AdamW's step weight decay; a factor of exactly 1 (weightDecay 0) is skipped, which changes nothing.
    if (decoupled && weightDecay != 0) at::_foreach_mul_(p, 1 - lr * weightDecay);

    // Decay the first and second moment running averages.
    at::_foreach_mul_(m, beta1);
    at::_foreach_add_(m, d, 1 - beta1);
    at::_foreach_mul_(v, beta2);
    at::_foreach_addcmul_(v, d, d, 1 - beta2);

    TensorList denom;
    if (amsgrad) {
      TensorList vmax = gather(group, &AdamItem::vmax);
      for (size_t j = 0; j < group.size(); j++) at::maximum_out(vmax[j], vmax[j], v[j]);
      denom = at::_foreach_sqrt(vmax);
    } else {
      denom = at::_foreach_sqrt(v);
    }
    at::_foreach_div_(denom, gather(group, &AdamItem::bc2Sqrt));
    at::_foreach_add_(denom, eps);
    at::_foreach_addcdiv_(p, m, denom, gather(group, &AdamItem::negStepSize));
  }
  return info.Env().Undefined();
}

// clipGradNorm(tensors, fromParams, maxNorm, normType, errorIfNonfinite) -> total norm (a number)
// torch.nn.utils.clip_grad_norm_ (1.13): the norm of the per-tensor norms, then every
// gradient times clamp(maxNorm / (total + 1e-6), max=1). With fromParams the tensors are
// parameters and their .grad is used (parameters without one are skipped).
static Napi::Value clipGradNorm(const Napi::CallbackInfo& info) {
  at::NoGradGuard noGrad;
  TensorList in = tensorListArg(info, 0);
  bool fromParams = boolArg(info, 1);
  double maxNorm = numArg(info, 2), normType = numArg(info, 3);
  bool errorIfNonfinite = boolArg(info, 4);
  TensorList grads;
  for (auto& t : in) {
    at::Tensor g = fromParams ? t.grad() : t;
    if (g.defined()) grads.push_back(g);
  }
  if (grads.empty()) return Napi::Number::New(info.Env(), 0);
  const at::Device device = grads[0].device();
  at::Tensor total;
  TensorList norms;
  norms.reserve(grads.size());
  if (std::isinf(normType) && normType > 0) {
    for (auto& g : grads) norms.push_back(g.abs().max().to(device));
    total = norms.size() == 1 ? norms[0] : at::max(at::stack(norms));
  } else {
    // torch.norm(t, p) with no dim is at::norm over every dim in 1.13.
    auto allDims = [](const at::Tensor& t) {
      std::vector<int64_t> d(t.dim());
      std::iota(d.begin(), d.end(), 0);
      return d;
    };
    for (auto& g : grads) norms.push_back(at::norm(g, normType, allDims(g), false).to(device));
    at::Tensor stacked = at::stack(norms);
    total = at::norm(stacked, normType, allDims(stacked), false);
  }
  double totalValue = total.item<double>();
  if (errorIfNonfinite && !std::isfinite(totalValue))
    throw std::invalid_argument("the total norm of order " + c10::str(normType) +
                                " of the gradients is non-finite, so it cannot be clipped");
  // max_norm / x is x.reciprocal() * max_norm in PyTorch's Tensor.__rdiv__.
  at::Tensor coef = at::clamp((total + 1e-6).reciprocal() * maxNorm, c10::nullopt, 1.0);
  for (auto& g : grads) g.mul_(coef.to(g.device()));
  return Napi::Number::New(info.Env(), totalValue);
}

// emaUpdate(emas, params, beta): ema = lerp(ema, p, 1 - beta) for every pair, as EDM2's
// phema.py does. A parameter of another dtype or device is converted first.
static Napi::Value emaUpdate(const Napi::CallbackInfo& info) {
  at::NoGradGuard noGrad;
  TensorList emas = tensorListArg(info, 0);
  TensorList params = listOf(info, 1, emas.size(), "parameters");
  double weight = 1 - numArg(info, 2);
  for (size_t k = 0; k < emas.size(); k++) {
    at::Tensor& e = emas[k];
    const at::Tensor& p = params[k];
    if (!e.sizes().equals(p.sizes()))
      throw std::invalid_argument("average " + std::to_string(k) + " has shape " + c10::str(e.sizes()) +
                                  " but its parameter has shape " + c10::str(p.sizes()));
    if (p.scalar_type() == e.scalar_type() && p.device() == e.device()) e.lerp_(p, weight);
    else e.lerp_(p.to(e.options()), weight);
  }
  return info.Env().Undefined();
}

// zeroGrads(params, setToNone): torch's Optimizer.zero_grad for a whole list.
static Napi::Value zeroGrads(const Napi::CallbackInfo& info) {
  TensorList params = tensorListArg(info, 0);
  bool setToNone = boolArg(info, 1, true);
  for (auto& p : params) {
    if (setToNone) {
      p.mutable_grad() = at::Tensor();
      continue;
    }
    at::Tensor& g = p.mutable_grad();
    if (!g.defined()) continue;
    if (g.grad_fn()) g.detach_();
    else g.requires_grad_(false);
    g.zero_();
  }
  return info.Env().Undefined();
}

// cloneList(tensors) -> detached copies with their own memory (the averages' initial values).
static Napi::Value cloneList(const Napi::CallbackInfo& info) {
  at::NoGradGuard noGrad;
  TensorList in = tensorListArg(info, 0);
  TensorList out;
  out.reserve(in.size());
  for (auto& t : in) out.push_back(t.detach().clone());
  return wrapList(info.Env(), out);
}

// zerosLikeList(tensors) -> zero tensors shaped, typed and placed like each (optimizer state).
static Napi::Value zerosLikeList(const Napi::CallbackInfo& info) {
  TensorList in = tensorListArg(info, 0);
  TensorList out;
  out.reserve(in.size());
  for (auto& t : in) out.push_back(at::zeros_like(t, at::MemoryFormat::Preserve));
  return wrapList(info.Env(), out);
}

// copyList(dsts, srcs): dst.copy_(src) for every pair (load averaged weights into a model).
static Napi::Value copyList(const Napi::CallbackInfo& info) {
  at::NoGradGuard noGrad;
  TensorList dst = tensorListArg(info, 0);
  TensorList src = listOf(info, 1, dst.size(), "sources");
  for (size_t k = 0; k < dst.size(); k++) {
    if (!dst[k].sizes().equals(src[k].sizes()))
      throw std::invalid_argument("tensor " + std::to_string(k) + ": cannot copy shape " + c10::str(src[k].sizes()) +
                                  " into shape " + c10::str(dst[k].sizes()));
    dst[k].copy_(src[k]);
  }
  return info.Env().Undefined();
}

void registerOptim(Registry& r) {
  r.add("sgdStep", sgdStep);
  r.add("adamStep", adamStep);
  r.add("clipGradNorm", clipGradNorm);
  r.add("emaUpdate", emaUpdate);
  r.add("zeroGrads", zeroGrads);
  r.add("cloneList", cloneList);
  r.add("zerosLikeList", zerosLikeList);
  r.add("copyList", copyList);
}

}  // namespace diffuse
