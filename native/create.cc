// Tensor creation, random sampling from explicit generators, and moving data
// between JS typed arrays and tensors.
#include "common.h"

#include <cstring>

namespace diffuse {

// fromBytes(bytes: ArrayBufferView, dtype, shape, device)
static Napi::Value fromBytes(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() && !info[0].IsDataView()) throw std::invalid_argument("data must be a typed array");
  auto view = info[0].As<Napi::TypedArray>();
  auto dtype = dtypeArg(info, 1);
  auto shape = intsArg(info, 2);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  const size_t want = t.nbytes();
  const size_t have = view.ByteLength();
  if (want != have)
    throw std::invalid_argument("data has " + std::to_string(have) + " bytes but shape " + c10::str(shape) + " of " +
                                c10::toString(dtype) + " needs " + std::to_string(want));
  auto* src = static_cast<uint8_t*>(view.ArrayBuffer().Data()) + view.ByteOffset();
  if (want) std::memcpy(t.data_ptr(), src, want);
  at::Device dev = deviceArg(info, 3);
  if (!dev.is_cpu()) t = t.to(dev);
  return wrap(info.Env(), std::move(t));
}

// toBytes(t) -> Buffer with the row-major bytes of t (copied to the CPU if needed).
static Napi::Value toBytes(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0).detach().to(at::kCPU).contiguous();
  return Napi::Buffer<uint8_t>::Copy(info.Env(), static_cast<const uint8_t*>(t.data_ptr()), t.nbytes());
}

static Napi::Value item(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  if (t.numel() != 1) throw std::invalid_argument("item() needs a tensor with one element, got " + c10::str(t.sizes()));
  if (t.scalar_type() == at::kBool) return Napi::Boolean::New(info.Env(), t.item<bool>());
  return Napi::Number::New(info.Env(), t.item<double>());
}

static Napi::Value zeros(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::zeros(intsArg(info, 0), optionsArg(info, 1, 2)));
}

static Napi::Value ones(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::ones(intsArg(info, 0), optionsArg(info, 1, 2)));
}

static Napi::Value empty(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::empty(intsArg(info, 0), optionsArg(info, 1, 2)));
}

// full(shape, value, dtype, device)
static Napi::Value full(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::full(intsArg(info, 0), scalarArg(info, 1), optionsArg(info, 2, 3)));
}

// arange(start, end, step, dtype, device)
static Napi::Value arange(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::arange(scalarArg(info, 0), scalarArg(info, 1), scalarArg(info, 2), optionsArg(info, 3, 4)));
}

// linspace(start, end, steps, dtype, device)
static Napi::Value linspace(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::linspace(scalarArg(info, 0), scalarArg(info, 1), intArg(info, 2), optionsArg(info, 3, 4)));
}

// eye(n, m, dtype, device)
static Napi::Value eye(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::eye(intArg(info, 0), intArg(info, 1), optionsArg(info, 2, 3)));
}

// fullLike(t, value, dtype|null)
static Napi::Value fullLike(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  auto opts = t.options();
  if (!isNullish(info[2])) opts = opts.dtype(dtypeArg(info, 2));
  return wrap(info.Env(), at::full(t.sizes(), scalarArg(info, 1), opts));
}

// Random tensors are drawn on the CPU with the given generator, then moved, so a
// seed gives the same numbers on every device (EDM's StackedRandomGenerator idea).
static at::Tensor onDevice(at::Tensor t, const at::Device& dev) { return dev.is_cpu() ? t : t.to(dev); }

static at::TensorOptions cpuOptions(const Napi::CallbackInfo& info, size_t dtypeIdx) {
  return at::TensorOptions().dtype(dtypeArg(info, dtypeIdx));
}

// rand(shape, gen, dtype, device)
static Napi::Value rand(const Napi::CallbackInfo& info) {
  at::Tensor t = at::rand(intsArg(info, 0), generatorArg(info, 1), cpuOptions(info, 2));
  return wrap(info.Env(), onDevice(t, deviceArg(info, 3)));
}

// randn(shape, gen, dtype, device)
static Napi::Value randn(const Napi::CallbackInfo& info) {
  at::Tensor t = at::randn(intsArg(info, 0), generatorArg(info, 1), cpuOptions(info, 2));
  return wrap(info.Env(), onDevice(t, deviceArg(info, 3)));
}

// randint(low, high, shape, gen, dtype, device)
static Napi::Value randint(const Napi::CallbackInfo& info) {
  at::Tensor t = at::randint(intArg(info, 0), intArg(info, 1), intsArg(info, 2), generatorArg(info, 3), cpuOptions(info, 4));
  return wrap(info.Env(), onDevice(t, deviceArg(info, 5)));
}

// randperm(n, gen, dtype, device)
static Napi::Value randperm(const Napi::CallbackInfo& info) {
  at::Tensor t = at::randperm(intArg(info, 0), generatorArg(info, 1), cpuOptions(info, 2));
  return wrap(info.Env(), onDevice(t, deviceArg(info, 3)));
}

// bernoulli(t, p, gen): 0/1 samples shaped like t with probability p, t's dtype and device.
static Napi::Value bernoulli(const Napi::CallbackInfo& info) {
  const at::Tensor& like = tensorArg(info, 0);
  at::Tensor t = at::empty(like.sizes(), like.options().device(at::kCPU)).bernoulli_(numArg(info, 1), generatorArg(info, 2));
  return wrap(info.Env(), onDevice(t, like.device()));
}

void registerCreate(Registry& r) {
  r.add("fromBytes", fromBytes);
  r.add("toBytes", toBytes);
  r.add("item", item);
  r.add("zeros", zeros);
  r.add("ones", ones);
  r.add("empty", empty);
  r.add("full", full);
  r.add("arange", arange);
  r.add("linspace", linspace);
  r.add("eye", eye);
  r.add("fullLike", fullLike);
  r.add("rand", rand);
  r.add("randn", randn);
  r.add("randint", randint);
  r.add("randperm", randperm);
  r.add("bernoulli", bernoulli);
}

}  // namespace diffuse
