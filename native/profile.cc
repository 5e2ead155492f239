// Op profiler: ATen's RecordFunction callbacks count and time every operator (and every
// autograd backward function) while it is on, so a user can see where a step's time goes.
//
// profilerStart() registers one global callback pair; profilerStop() removes it and
// returns one row per (name, kind): [name, kind, calls, totalUs, selfUs, topUs], where
// total counts nested ops, self does not, and top is the time spent as an outermost op
// (no recorded op above it on its thread): the sum of top over all rows is the time
// inside ATen, so the wall time minus it is the time outside (JS, N-API, handles).
#include "common.h"

#include <ATen/record_function.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <unordered_map>

namespace diffuse {
namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  int64_t calls = 0;
  double totalUs = 0, selfUs = 0, topUs = 0;
};

struct Frame {
  Clock::time_point start;
  double childUs = 0;
  uint64_t session = 0;  // the profile() call that opened it
};

std::mutex rowsMutex;
std::unordered_map<std::string, Row> rows;  // key: kind char + name
at::CallbackHandle handle = 0;
std::atomic<bool> running{false};
std::atomic<uint64_t> session{0};  // bumped by every start: frames of older sessions are stale
thread_local std::vector<Frame> frames;

std::unique_ptr<at::ObserverContext> onStart(const at::RecordFunction&) {
  const uint64_t now = session.load(std::memory_order_relaxed);
  if (!frames.empty() && frames.back().session != now) frames.clear();  // left open by an earlier profile
  frames.push_back(Frame{Clock::now(), 0, now});
  return nullptr;
}

void onEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  if (frames.empty()) return;  // started before the profiler was
  Frame f = frames.back();
  frames.pop_back();
  if (f.session != session.load(std::memory_order_relaxed)) return;  // an earlier profile's op
  double us = std::chrono::duration<double, std::micro>(Clock::now() - f.start).count();
  if (!frames.empty()) frames.back().childUs += us;
  std::string key(1, fn.scope() == at::RecordScope::BACKWARD_FUNCTION ? 'b' : 'o');
  key += fn.name();
  std::lock_guard<std::mutex> lock(rowsMutex);
  Row& r = rows[key];
  r.calls++;
  r.totalUs += us;
  r.selfUs += us - f.childUs;
  if (frames.empty()) r.topUs += us;
}

Napi::Value profilerStart(const Napi::CallbackInfo& info) {
  bool expected = false;
  if (!running.compare_exchange_strong(expected, true)) throw std::invalid_argument("the profiler is already running (profile() calls do not nest, and one runs at a time per process)");
  {
    std::lock_guard<std::mutex> lock(rowsMutex);
    rows.clear();
  }
  session.fetch_add(1);
  frames.clear();
  try {
    handle = at::addGlobalCallback(
        at::RecordFunctionCallback(onStart, onEnd).scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  } catch (...) {
    running.store(false);
    throw;
  }
  return info.Env().Undefined();
}

Napi::Value profilerStop(const Napi::CallbackInfo& info) {
  if (!running.load()) throw std::invalid_argument("the profiler is not running");
  at::removeCallback(handle);
  frames.clear();
  struct Done {  // the profiler is free again however this returns
    ~Done() { running.store(false); }
  } done;
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(rowsMutex);
  auto out = Napi::Array::New(env, rows.size());
  uint32_t i = 0;
  for (auto& [key, r] : rows) {
    auto row = Napi::Array::New(env, 6);
    row.Set(0u, Napi::String::New(env, key.substr(1)));
    row.Set(1u, Napi::String::New(env, key[0] == 'b' ? "backward" : "op"));
    row.Set(2u, Napi::Number::New(env, static_cast<double>(r.calls)));
    row.Set(3u, Napi::Number::New(env, r.totalUs));
    row.Set(4u, Napi::Number::New(env, r.selfUs));
    row.Set(5u, Napi::Number::New(env, r.topUs));
    out.Set(i++, row);
  }
  rows.clear();
  return out;
}

}  // namespace

void registerProfile(Registry& r) {
  r.add("profilerStart", profilerStart);
  r.add("profilerStop", profilerStop);
}

}  // namespace diffuse
