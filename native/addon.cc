// The addon's entry point: handles and their accounting, argument conversion,
// error translation, threads, grad and autocast modes, generators.
#include "common.h"

#include <torch/cuda.h>
#include <torch/version.h>
#include <ATen/autocast_mode.h>
#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace diffuse {

thread_local const char* currentOp = nullptr;

// ---- live tensor accounting (process-wide: libtorch memory is process-wide) ----
namespace {
std::mutex statsMutex;
std::unordered_map<const void*, std::pair<int64_t, int64_t>> storages;  // impl -> (handles, bytes)
int64_t liveHandles = 0;
int64_t liveBytes = 0;
int64_t liveHostBytes = 0;
}  // namespace

static void track(Napi::Env env, Holder* h) {
  const at::Tensor& t = h->t;
  if (!t.has_storage()) {
    std::lock_guard<std::mutex> lock(statsMutex);
    liveHandles++;
    return;
  }
  const auto& st = t.storage();
  h->storage = st.unsafeGetStorageImpl();
  int64_t add = 0;
  {
    std::lock_guard<std::mutex> lock(statsMutex);
    liveHandles++;
    auto& entry = storages[h->storage];
    if (entry.first++ == 0) {
      entry.second = static_cast<int64_t>(st.nbytes());
      liveBytes += entry.second;
      if (st.device().is_cpu()) { liveHostBytes += entry.second; add = entry.second; }
    }
  }
  h->bytes = add;
  if (add) Napi::MemoryManagement::AdjustExternalMemory(env, add);
}

void release(Napi::Env env, Holder* h) {
  if (!h->t.defined()) return;
  int64_t sub = 0;
  {
    std::lock_guard<std::mutex> lock(statsMutex);
    liveHandles--;
    if (h->storage) {
      auto it = storages.find(h->storage);
      if (it != storages.end() && --it->second.first == 0) {
        liveBytes -= it->second.second;
        if (h->t.device().is_cpu()) { liveHostBytes -= it->second.second; sub = it->second.second; }
        storages.erase(it);
      }
    }
  }
  h->t.reset();
  // V8 is told about the bytes this env reported; others are settled by their own env.
  if (sub) Napi::MemoryManagement::AdjustExternalMemory(env, -sub);
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  auto* h = new Holder{std::move(t)};
  track(env, h);
  return Napi::External<Holder>::New(env, h, [](Napi::Env e, Holder* p) {
    release(e, p);
    delete p;
  });
}

Napi::Value wrapList(Napi::Env env, const std::vector<at::Tensor>& ts) {
  auto arr = Napi::Array::New(env, ts.size());
  for (uint32_t i = 0; i < ts.size(); i++) arr.Set(i, wrap(env, ts[i]));
  return arr;
}

// ---- arguments ----
static void argError(const Napi::CallbackInfo& info, size_t i, const char* what) {
  throw std::invalid_argument("argument " + std::to_string(i) + " must be " + what);
}

bool isNullish(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

Holder* holderArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (!v.IsExternal()) argError(info, i, "a tensor");
  return v.As<Napi::External<Holder>>().Data();
}

const at::Tensor& tensorArg(const Napi::CallbackInfo& info, size_t i) {
  Holder* h = holderArg(info, i);
  if (!h->t.defined()) throw std::invalid_argument("a tensor passed to it has been disposed (used after dispose() or after its tidy() scope ended)");
  return h->t;
}

at::Tensor optTensorArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || isNullish(info[i])) return at::Tensor();
  return tensorArg(info, i);
}

std::vector<at::Tensor> tensorListArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) argError(info, i, "an array of tensors");
  auto arr = info[i].As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsExternal()) throw std::invalid_argument("element " + std::to_string(k) + " is not a tensor");
    Holder* h = v.As<Napi::External<Holder>>().Data();
    if (!h->t.defined()) throw std::invalid_argument("tensor " + std::to_string(k) + " of the list has been disposed (used after dispose() or after its tidy() scope ended)");
    out.push_back(h->t);
  }
  return out;
}

static const at::ScalarType kCodes[] = {
    at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong,
    at::kInt,   at::kByte,   at::kBool, at::kChar,     at::kShort};
static constexpr int kNumCodes = sizeof(kCodes) / sizeof(kCodes[0]);

at::ScalarType dtypeFromCode(int code) {
  if (code < 0 || code >= kNumCodes) throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  return kCodes[code];
}

int dtypeCode(at::ScalarType t) {
  for (int i = 0; i < kNumCodes; i++)
    if (kCodes[i] == t) return i;
  throw std::invalid_argument(std::string("dtype ") + c10::toString(t) + " is not supported by Diffuse");
}

at::ScalarType dtypeArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) argError(info, i, "a dtype code");
  return dtypeFromCode(info[i].As<Napi::Number>().Int32Value());
}

int64_t intArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) argError(info, i, "a number");
  return info[i].As<Napi::Number>().Int64Value();
}

double numArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) argError(info, i, "a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

c10::optional<double> optNumArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || isNullish(info[i])) return c10::nullopt;
  return numArg(info, i);
}

bool boolArg(const Napi::CallbackInfo& info, size_t i, bool fallback) {
  if (i >= info.Length() || isNullish(info[i])) return fallback;
  return info[i].ToBoolean().Value();
}

std::string strArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsString()) argError(info, i, "a string");
  return info[i].As<Napi::String>().Utf8Value();
}

std::vector<int64_t> intsArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (v.IsNumber()) return {v.As<Napi::Number>().Int64Value()};
  if (!v.IsArray()) argError(info, i, "an array of integers");
  auto arr = v.As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value e = arr.Get(k);
    if (!e.IsNumber()) argError(info, i, "an array of integers");
    out[k] = e.As<Napi::Number>().Int64Value();
  }
  return out;
}

at::Scalar scalarArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (v.IsBoolean()) return at::Scalar(v.As<Napi::Boolean>().Value());
  if (!v.IsNumber()) argError(info, i, "a number");
  double d = v.As<Napi::Number>().DoubleValue();
  // Integers stay integral so that int tensors are not promoted (as in Python).
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.007199254740992e15)
    return at::Scalar(static_cast<int64_t>(d));
  return at::Scalar(d);
}

at::Device deviceArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || isNullish(info[i])) return at::Device(at::kCPU);
  return at::Device(strArg(info, i));
}

at::TensorOptions optionsArg(const Napi::CallbackInfo& info, size_t dtypeIdx, size_t deviceIdx) {
  return at::TensorOptions().dtype(dtypeArg(info, dtypeIdx)).device(deviceArg(info, deviceIdx));
}

c10::optional<at::Generator> generatorArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || isNullish(info[i])) return c10::nullopt;
  if (!info[i].IsExternal()) argError(info, i, "a Generator");
  return *info[i].As<Napi::External<at::Generator>>().Data();
}

// ---- handles ----
static Napi::Value dispose(const Napi::CallbackInfo& info) {
  release(info.Env(), holderArg(info, 0));
  return info.Env().Undefined();
}

static Napi::Value isDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !holderArg(info, 0)->t.defined());
}

static Napi::Value shape(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  auto sizes = t.sizes();
  auto arr = Napi::Array::New(info.Env(), sizes.size());
  for (uint32_t i = 0; i < sizes.size(); i++) arr.Set(i, Napi::Number::New(info.Env(), static_cast<double>(sizes[i])));
  return arr;
}

static Napi::Value dtype(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), dtypeCode(tensorArg(info, 0).scalar_type()));
}

static Napi::Value device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), tensorArg(info, 0).device().str());
}

static Napi::Value stats(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  std::lock_guard<std::mutex> lock(statsMutex);
  o.Set("tensors", Napi::Number::New(info.Env(), static_cast<double>(liveHandles)));
  o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(liveBytes)));
  o.Set("hostBytes", Napi::Number::New(info.Env(), static_cast<double>(liveHostBytes)));
  o.Set("storages", Napi::Number::New(info.Env(), static_cast<double>(storages.size())));
  return o;
}

// ---- threads, devices, version ----
static Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = intArg(info, 0);
  if (n < 1) throw std::invalid_argument("threads must be >= 1, got " + std::to_string(n));
  at::set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}

static Napi::Value getNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

static Napi::Value setInteropThreads(const Napi::CallbackInfo& info) {
  at::set_num_interop_threads(static_cast<int>(intArg(info, 0)));
  return info.Env().Undefined();
}

static Napi::Value cudaIsAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), torch::cuda::is_available());
}

static Napi::Value cudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(torch::cuda::device_count()));
}

static Napi::Value version(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), TORCH_VERSION);
}

static Napi::Value config(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), at::show_config() + at::get_parallel_info());
}

// ---- grad mode and autocast (thread-local in libtorch, like the JS that drives them) ----
static Napi::Value setGradEnabled(const Napi::CallbackInfo& info) {
  bool prev = at::GradMode::is_enabled();
  at::GradMode::set_enabled(boolArg(info, 0));
  return Napi::Boolean::New(info.Env(), prev);
}

static Napi::Value isGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled());
}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
static bool autocastCpuEnabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
static void setAutocastCpu(bool on) { at::autocast::set_autocast_enabled(at::kCPU, on); }
static at::ScalarType autocastCpuDtype() { return at::autocast::get_autocast_dtype(at::kCPU); }
static void setAutocastCpuDtype(at::ScalarType t) { at::autocast::set_autocast_dtype(at::kCPU, t); }
#else
static bool autocastCpuEnabled() { return at::autocast::is_cpu_enabled(); }
static void setAutocastCpu(bool on) { at::autocast::set_cpu_enabled(on); }
static at::ScalarType autocastCpuDtype() { return at::autocast::get_autocast_cpu_dtype(); }
static void setAutocastCpuDtype(at::ScalarType t) { at::autocast::set_autocast_cpu_dtype(t); }
#endif

// autocastEnter(enabled, dtypeCode) -> [prevEnabled, prevDtypeCode]
static Napi::Value autocastEnter(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto prev = Napi::Array::New(env, 2);
  prev.Set(0u, Napi::Boolean::New(env, autocastCpuEnabled()));
  prev.Set(1u, Napi::Number::New(env, dtypeCode(autocastCpuDtype())));
  setAutocastCpu(boolArg(info, 0));
  setAutocastCpuDtype(dtypeArg(info, 1));
  at::autocast::increment_nesting();
  return prev;
}

// autocastExit(prevEnabled, prevDtypeCode): restores the state autocastEnter returned.
static Napi::Value autocastExit(const Napi::CallbackInfo& info) {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  setAutocastCpu(boolArg(info, 0));
  setAutocastCpuDtype(dtypeArg(info, 1));
  return info.Env().Undefined();
}

static Napi::Value isAutocastEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), autocastCpuEnabled());
}

// ---- generators: explicit, seeded, CPU (samples are drawn on the CPU, then moved) ----
static Napi::Value newGenerator(const Napi::CallbackInfo& info) {
  uint64_t seed = static_cast<uint64_t>(intArg(info, 0));
  auto* g = new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed));
  return Napi::External<at::Generator>::New(info.Env(), g, [](Napi::Env, at::Generator* p) { delete p; });
}

static at::Generator& generatorRef(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsExternal()) throw std::invalid_argument("argument must be a Generator");
  return *info[i].As<Napi::External<at::Generator>>().Data();
}

static Napi::Value generatorState(const Napi::CallbackInfo& info) {
  at::Generator& g = generatorRef(info, 0);
  std::lock_guard<std::mutex> lock(g.mutex());
  at::Tensor st = g.get_state();
  return Napi::Buffer<uint8_t>::Copy(info.Env(), st.data_ptr<uint8_t>(), st.numel());
}

static Napi::Value generatorSetState(const Napi::CallbackInfo& info) {
  at::Generator& g = generatorRef(info, 0);
  if (!info[1].IsTypedArray()) throw std::invalid_argument("state must be a Uint8Array");
  auto bytes = info[1].As<Napi::Uint8Array>();
  at::Tensor st = at::empty({static_cast<int64_t>(bytes.ByteLength())}, at::kByte);
  std::memcpy(st.data_ptr<uint8_t>(), bytes.Data(), bytes.ByteLength());
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(st);
  return info.Env().Undefined();
}

// ---- registration ----
namespace {
struct Entry {
  const char* name;
  NativeFn fn;
};
std::vector<Entry>& entries() {
  static std::vector<Entry> all;
  return all;
}

Napi::Value trampoline(const Napi::CallbackInfo& info) {
  auto* e = static_cast<Entry*>(info.Data());
  currentOp = nullptr;
  auto name = [&] { return std::string(currentOp ? currentOp : e->name); };
  try {
    return e->fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& err) {
    throw Napi::Error::New(info.Env(), name() + ": " + err.what_without_backtrace());
  } catch (const std::exception& err) {
    throw Napi::Error::New(info.Env(), name() + ": " + err.what());
  }
}
}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] {
    Registry r;
    r.add("dispose", dispose);
    r.add("isDisposed", isDisposed);
    r.add("shape", shape);
    r.add("dtype", dtype);
    r.add("device", device);
    r.add("stats", stats);
    r.add("setNumThreads", setNumThreads);
    r.add("getNumThreads", getNumThreads);
    r.add("setInteropThreads", setInteropThreads);
    r.add("cudaIsAvailable", cudaIsAvailable);
    r.add("cudaDeviceCount", cudaDeviceCount);
    r.add("version", version);
    r.add("config", config);
    r.add("setGradEnabled", setGradEnabled);
    r.add("isGradEnabled", isGradEnabled);
    r.add("autocastEnter", autocastEnter);
    r.add("autocastExit", autocastExit);
    r.add("isAutocastEnabled", isAutocastEnabled);
    r.add("newGenerator", newGenerator);
    r.add("generatorState", generatorState);
    r.add("generatorSetState", generatorSetState);
    registerCreate(r);
    registerOps(r);
    registerNN(r);
    registerAutograd(r);
    registerOptim(r);
    entries().reserve(r.fns.size());
    for (auto& [n, f] : r.fns) entries().push_back(Entry{n, f});
  });
  for (auto& e : entries()) exports.Set(e.name, Napi::Function::New(env, trampoline, e.name, &e));
  return exports;
}

}  // namespace diffuse

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return diffuse::Init(env, exports); }

NODE_API_MODULE(diffuse_native, InitAddon)
