// The addon's entry point: handles and their accounting, argument conversion,
// error translation, threads, grad and autocast modes, generators.
#include "common.h"

#include <torch/cuda.h>
#include <torch/version.h>
#include <ATen/autocast_mode.h>
#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>

#include <v8.h>

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

namespace diffuse {

thread_local const char* currentOp = nullptr;

// ---- live tensor accounting (process-wide: libtorch memory is process-wide) ----
namespace {
// Storage -> (handles on it, its bytes): open addressing with linear probing and
// backward-shift deletion, so counting a tensor allocates nothing (std::unordered_map
// allocated a node per tensor).
class StorageCounts {
 public:
  struct Entry {
    const void* key;
    int64_t handles;
    int64_t bytes;
    bool reported;  // its host bytes were reported to V8 (a handle on it went to the GC)
  };
  // The entry for key, made with zero counts if absent; valid until the next get().
  Entry& get(const void* key) {
    if ((count_ + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    for (size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      Entry& e = slots_[i];
      if (e.key == key) return e;
      if (e.key == nullptr) {
        e = Entry{key, 0, 0, false};
        count_++;
        return e;
      }
    }
  }
  Entry* find(const void* key) {
    const size_t mask = slots_.size() - 1;
    for (size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == nullptr) return nullptr;
    }
  }
  void erase(Entry* e) {
    const size_t mask = slots_.size() - 1;
    size_t hole = static_cast<size_t>(e - slots_.data());
    for (size_t j = (hole + 1) & mask; slots_[j].key != nullptr; j = (j + 1) & mask) {
      // The entry at j may fill the hole unless its home slot lies cyclically in (hole, j].
      const size_t home = hash(slots_[j].key) & mask;
      const bool stays = hole < j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (!stays) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole].key = nullptr;
    count_--;
  }
  size_t size() const { return count_; }

 private:
  static size_t hash(const void* p) {
    uint64_t x = reinterpret_cast<uintptr_t>(p);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return static_cast<size_t>(x);
  }
  void grow() {
    std::vector<Entry> old(slots_.size() * 2, Entry{nullptr, 0, 0, false});
    old.swap(slots_);
    count_ = 0;
    for (const Entry& e : old)
      if (e.key != nullptr) get(e.key) = e;
  }
  std::vector<Entry> slots_ = std::vector<Entry>(256, Entry{nullptr, 0, 0, false});
  size_t count_ = 0;
};

std::mutex statsMutex;
StorageCounts storages;
int64_t liveHandles = 0;
int64_t liveBytes = 0;
int64_t liveHostBytes = 0;
int64_t reportedBytes = 0;
}  // namespace

// ---- handles ----
// A handle is a JS External made without a finalizer: a bare V8 object, no N-API
// reference, no weak global handle, nothing for the GC to call back (that machinery
// cost more than the op itself for small tensors). Its value is not a pointer but
// (generation << kIndexBits | index) into this environment's table of Holders: slots
// are reused, and a handle whose generation no longer matches its slot's was disposed,
// so use after dispose() is an error, never another tensor. The GC backstop for handles
// nobody disposes is a FinalizationRegistry in src/engine/tensor.ts that watches the
// handle and disposes it through an alias (handleAlias); the environment's teardown
// releases whatever is left.
namespace {
constexpr int kIndexBits = 28;  // 268M live handles per environment
constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;
constexpr uint64_t kGenMask = (uint64_t{1} << (64 - kIndexBits)) - 1;  // 2^36 reuses of a slot before a wrap
constexpr uint32_t kChunkBits = 12;  // Holders are allocated 4096 at a time and never move
constexpr uint32_t kChunk = 1u << kChunkBits;

struct HandleTable {
  v8::Isolate* isolate = nullptr;
  std::vector<std::unique_ptr<Holder[]>> chunks;
  std::vector<uint32_t> freeSlots;  // LIFO: the slot just freed is warm in cache
  uint32_t used = 0;                // slots ever handed out

  Holder& at(uint64_t index) { return chunks[index >> kChunkBits][index & (kChunk - 1)]; }
};

// The disposed state: what a stale or foreign handle resolves to.
Holder disposedHolder;

// N-API's napi_create_external gives every External a weak global handle and a
// finalizer record (Node 20's ExternalWrapper), whatever the finalizer, and
// napi_get_value_external reads through that record. Tensor handles are therefore
// plain V8 Externals made and read with V8's API; everything else (typeof checks,
// passing them around) goes through N-API, whose napi_value is a v8::Local<v8::Value>.
// Init checks that equivalence before any handle is made.
static_assert(sizeof(napi_value) == sizeof(v8::Local<v8::Value>), "napi_value must be a v8::Local");
napi_value toNapi(v8::Local<v8::Value> v) {
  napi_value r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}
v8::Local<v8::Value> toV8(napi_value v) {
  v8::Local<v8::Value> r;
  std::memcpy(static_cast<void*>(&r), &v, sizeof v);  // as Node's own V8LocalValueFromJsValue
  return r;
}

HandleTable& tableOf(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return *static_cast<HandleTable*>(data);
}
}  // namespace

// Counts a new handle. V8 is not told about the bytes here: a tensor made in a scope
// is freed by the scope, and reporting every activation of a training step made V8
// run incremental marking steps inside the ops (~7% of a U-Net forward). The bytes
// are reported when a handle is handed to the GC backstop (reportToGC, called by
// handleAlias), so memory pressure still makes V8 collect the tensors it can free.
static void track(Napi::Env env, Holder* h) {
  const at::Tensor& t = h->t;
  h->bytes = 0;
  h->storage = nullptr;
  std::lock_guard<std::mutex> lock(statsMutex);
  liveHandles++;
  if (!t.has_storage()) return;
  const auto& st = t.storage();
  h->storage = st.unsafeGetStorageImpl();
  auto& entry = storages.get(h->storage);
  if (entry.handles++ == 0) {
    entry.bytes = static_cast<int64_t>(st.nbytes());
    liveBytes += entry.bytes;
    if (st.device().is_cpu()) liveHostBytes += entry.bytes;
  }
}

// Tells V8 about the host bytes behind h's storage (once per storage): h now lives
// until the GC collects it, and V8 should weigh its memory when deciding to collect.
static void reportToGC(Napi::Env env, Holder* h) {
  int64_t add = 0;
  {
    std::lock_guard<std::mutex> lock(statsMutex);
    auto* entry = h->storage ? storages.find(h->storage) : nullptr;
    if (entry == nullptr || entry->reported || !h->t.device().is_cpu()) return;
    entry->reported = true;
    add = entry->bytes;
    reportedBytes += add;
  }
  h->bytes = add;
  if (add) Napi::MemoryManagement::AdjustExternalMemory(env, add);
}

// Drops the tensor and its accounting; `report` tells V8 about the freed bytes.
static void untrack(Napi::Env env, Holder* h, bool report) {
  int64_t sub = 0;
  {
    std::lock_guard<std::mutex> lock(statsMutex);
    liveHandles--;
    if (h->storage) {
      auto* entry = storages.find(h->storage);
      if (entry != nullptr && --entry->handles == 0) {
        liveBytes -= entry->bytes;
        if (h->t.device().is_cpu()) liveHostBytes -= entry->bytes;
        if (entry->reported) {
          sub = entry->bytes;
          reportedBytes -= sub;
        }
        storages.erase(entry);
      }
    }
  }
  h->t.reset();
  // V8 is told about the bytes this env reported; others are settled by their own env.
  if (sub && report) Napi::MemoryManagement::AdjustExternalMemory(env, -sub);
}

void release(Napi::Env env, Holder* h) {
  if (!h->t.defined()) return;
  untrack(env, h, true);
  // Back to the free list; the generation bump makes every handle on this slot stale.
  HandleTable& table = tableOf(env);
  h->gen = (h->gen + 1) & kGenMask;
  if (h->gen == 0) h->gen = 1;  // a handle is never 0 (V8 reserves a null External)
  table.freeSlots.push_back(h->index);
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  HandleTable& table = tableOf(env);
  uint32_t index;
  if (!table.freeSlots.empty()) {
    index = table.freeSlots.back();
    table.freeSlots.pop_back();
  } else {
    if (table.used > kIndexMask) throw std::runtime_error("too many live tensors (2^28 handles in one environment)");
    if ((table.used & (kChunk - 1)) == 0) table.chunks.emplace_back(new Holder[kChunk]);
    index = table.used++;
    table.at(index).index = index;
  }
  Holder* h = &table.at(index);
  h->t = std::move(t);
  track(env, h);
  uint64_t code = (h->gen << kIndexBits) | index;
  return Napi::Value(env, toNapi(v8::External::New(table.isolate, reinterpret_cast<void*>(code))));
}

Holder* holderFrom(napi_env env, const Napi::Value& v) {
  auto code = reinterpret_cast<uint64_t>(toV8(v).As<v8::External>()->Value());
  HandleTable& table = tableOf(env);
  uint64_t index = code & kIndexMask;
  if (index >= table.used) return &disposedHolder;
  Holder& h = table.at(index);
  return h.gen == (code >> kIndexBits) ? &h : &disposedHolder;
}

// Called when the environment is torn down (process exit, a worker ending): releases
// the tensors its handles still hold.
static void releaseTable(napi_env env, void* data, void*) {
  auto* table = static_cast<HandleTable*>(data);
  for (uint32_t i = 0; i < table->used; i++) {
    Holder& h = table->at(i);
    if (h.t.defined()) untrack(Napi::Env(env), &h, false);
  }
  delete table;
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
  if (!toV8(v)->IsExternal()) argError(info, i, "a tensor");
  return holderFrom(info.Env(), v);
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
    Holder* h = holderFrom(info.Env(), v);
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

// handleAlias(h) -> a second JS object naming the same slot and generation as h. The GC
// backstop (src/engine/tensor.ts) watches h and holds the alias, to dispose the tensor
// once h itself is unreachable (a raw handle kept without its Tensor keeps it alive).
static Napi::Value handleAlias(const Napi::CallbackInfo& info) {
  reportToGC(info.Env(), holderArg(info, 0));  // (also checks that it is a handle)
  void* code = toV8(info[0]).As<v8::External>()->Value();
  return Napi::Value(info.Env(), toNapi(v8::External::New(tableOf(info.Env()).isolate, code)));
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
  o.Set("gcBytes", Napi::Number::New(info.Env(), static_cast<double>(reportedBytes)));
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

// ---- the host allocator ----
// Tensors of a training step are allocated and freed every step. glibc's defaults return
// blocks over its (dynamic) mmap threshold and a free heap top over 2x that to the kernel,
// so the next step page-faults the same memory back in: 40-50% of a small conv step's CPU
// time on this machine. The engine keeps that memory instead: every block comes from the
// heap (mmap off: glibc caps its mmap threshold at 32 MiB, and a 64 px RGB step's activations
// pass that, which made that step 3x slower), and the heap top is trimmed only past 1 GiB
// free. DIFFUSE_MALLOC=default keeps
// glibc's defaults; a user's own MALLOC_*_ or GLIBC_TUNABLES settings are left alone.
static std::string mallocPolicyText = "glibc defaults";

static void tuneMalloc() {
#ifdef __GLIBC__
  const char* mode = std::getenv("DIFFUSE_MALLOC");
  if (mode && std::string(mode) == "default") {
    mallocPolicyText = "glibc defaults (DIFFUSE_MALLOC=default)";
    return;
  }
  for (const char* var : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"})
    if (std::getenv(var)) {
      mallocPolicyText = std::string("the environment's (") + var + " is set)";
      return;
    }
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1)
    mallocPolicyText = "diffuse: no mmap (every block from the heap), trim threshold 1 GiB";
#endif
}

static Napi::Value mallocPolicy(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), mallocPolicyText);
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
  {
    // The handle scheme above relies on napi_value being a v8::Local: check it.
    auto* table = new HandleTable();
    table->isolate = v8::Isolate::GetCurrent();
    napi_value probe = toNapi(v8::External::New(table->isolate, reinterpret_cast<void*>(uintptr_t{42})));
    napi_valuetype type;
    if (!table->isolate || napi_typeof(env, probe, &type) != napi_ok || type != napi_external ||
        toV8(Napi::Number::New(env, 7)).As<v8::Number>()->Value() != 7) {
      delete table;
      throw Napi::Error::New(env, "diffuse: this Node's N-API values are not V8 handles; the addon's tensor handles need them to be");
    }
    NAPI_THROW_IF_FAILED(env, napi_set_instance_data(env, table, releaseTable, nullptr), exports);
  }
  static std::once_flag once;
  std::call_once(once, [] {
    tuneMalloc();
    Registry r;
    r.add("dispose", dispose);
    r.add("isDisposed", isDisposed);
    r.add("handleAlias", handleAlias);
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
    r.add("mallocPolicy", mallocPolicy);
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
    registerProfile(r);
    registerDist(r);
    entries().reserve(r.fns.size());
    for (auto& [n, f] : r.fns) entries().push_back(Entry{n, f});
  });
  for (auto& e : entries()) exports.Set(e.name, Napi::Function::New(env, trampoline, e.name, &e));
  return exports;
}

}  // namespace diffuse

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return diffuse::Init(env, exports); }

NODE_API_MODULE(diffuse_native, InitAddon)
