// torch.distributed's engine (c10d) for data-parallel training: a Gloo process group with
// rendezvous through a TCPStore, as torchrun's env:// init does, and the collectives the
// training loop needs (broadcast, all-reduce, all-gather, barrier, and the bucketed
// gradient all-reduce of DistributedDataParallel). Every collective waits for its work and
// turns a failure (a peer that died, or the group's timeout passing) into an error naming
// the op and this rank; nothing blocks forever.
//
// ProcessGroupGloo.hpp is compiled only with USE_C10D_GLOO and needs Gloo's headers (Debian:
// libgloo-dev; the libtorch-dev build links libgloo.so.0). Without them the addon still
// builds, and distInit says why distributed training is unavailable.
#include "common.h"

#if __has_include(<gloo/config.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define DIFFUSE_HAS_GLOO 1
#else
#define DIFFUSE_HAS_GLOO 0
#endif

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace diffuse {

#if DIFFUSE_HAS_GLOO
namespace {

using Millis = std::chrono::milliseconds;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  int rank = 0;
  int size = 1;
  Millis timeout{0};
};

// "30 s", "0.5 s": a timeout for messages.
std::string seconds(Millis ms) {
  std::ostringstream o;
  o << ms.count() / 1000.0 << " s";
  return o.str();
}

// The message of an exception without libtorch's C++ backtrace.
std::string messageOf(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// Runs a collective and waits for it; any failure becomes an error naming the op and the rank.
template <class F>
void collective(const Group& g, const char* op, F&& start) {
  try {
    std::vector<c10::intrusive_ptr<c10d::Work>> works = start();
    for (auto& w : works) w->wait();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(op) + " failed on rank " + std::to_string(g.rank) + " of " + std::to_string(g.size) +
                             " (timeout " + seconds(g.timeout) + "): " + messageOf(e) +
                             " -- another rank died, hung or left the run");
  }
}

Group& groupArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsExternal()) throw std::invalid_argument("argument " + std::to_string(i) + " must be a process group");
  auto* g = info[i].As<Napi::External<Group>>().Data();
  if (!g->pg) throw std::invalid_argument("the process group has been destroyed");
  return *g;
}

// Tensors that c10d may write into: detached (no autograd), checked to be contiguous.
std::vector<at::Tensor> ioTensors(const Napi::CallbackInfo& info, size_t i) {
  std::vector<at::Tensor> ts = tensorListArg(info, i);
  for (size_t k = 0; k < ts.size(); k++) {
    if (!ts[k].is_contiguous()) throw std::invalid_argument("tensor " + std::to_string(k) + " is not contiguous");
    ts[k] = ts[k].detach();
  }
  return ts;
}

// The device Gloo binds to: GLOO_SOCKET_IFNAME's interface (as in PyTorch), loopback for a
// run on this machine only, else the address this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> glooDevice(const std::string& masterAddr, bool local) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (local) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// distInit(masterAddr, masterPort, rank, worldSize, timeoutMs, localOnly) -> a process group.
// Rank 0 hosts the TCPStore; everyone waits for the others up to the timeout.
Napi::Value distInit(const Napi::CallbackInfo& info) {
  const std::string addr = strArg(info, 0);
  const int64_t port = intArg(info, 1), rank = intArg(info, 2), size = intArg(info, 3), timeoutMs = intArg(info, 4);
  const bool local = boolArg(info, 5);
  if (port < 1 || port > 65535) throw std::invalid_argument("master port must be in 1..65535, got " + std::to_string(port));
  if (size < 1 || rank < 0 || rank >= size)
    throw std::invalid_argument("rank " + std::to_string(rank) + " is not in 0.." + std::to_string(size - 1) + " (world size " + std::to_string(size) + ")");
  auto g = std::make_unique<Group>();
  g->rank = static_cast<int>(rank);
  g->size = static_cast<int>(size);
  g->timeout = Millis(timeoutMs);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = static_cast<std::size_t>(size);
    so.waitWorkers = true;
    so.timeout = g->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(addr, so);
    g->store = c10::make_intrusive<c10d::PrefixStore>("diffuse/", tcp);
    auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
    opts->devices.push_back(glooDevice(addr, local));
    g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, g->rank, g->size, opts);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous at " + addr + ":" + std::to_string(port) + " failed on rank " + std::to_string(rank) + " of " +
                             std::to_string(size) + " (timeout " + seconds(Millis(timeoutMs)) + "): " + messageOf(e));
  }
  return Napi::External<Group>::New(info.Env(), g.release(), [](Napi::Env, Group* p) { delete p; });
}

// distDestroy(group): releases the group now (the GC would later).
Napi::Value distDestroy(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) throw std::invalid_argument("argument 0 must be a process group");
  auto* g = info[0].As<Napi::External<Group>>().Data();
  g->pg.reset();
  g->store.reset();
  return info.Env().Undefined();
}

// distBroadcast(group, tensors, root): every tensor takes root's values, in place.
Napi::Value distBroadcast(const Napi::CallbackInfo& info) {
  Group& g = groupArg(info, 0);
  auto ts = ioTensors(info, 1);
  const int64_t root = intArg(info, 2);
  if (root < 0 || root >= g.size) throw std::invalid_argument("root " + std::to_string(root) + " is not a rank of this group");
  collective(g, "broadcast", [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      works.push_back(g.pg->broadcast(one, o));
    }
    return works;
  });
  return info.Env().Undefined();
}

// Sums `flat` over the ranks in place (divided by the world size when `average`): Gloo has no AVG.
c10::intrusive_ptr<c10d::Work> startSum(Group& g, at::Tensor& flat) {
  std::vector<at::Tensor> one{flat};
  return g.pg->allreduce(one);
}

// distAllReduce(group, tensors, average): sums (or averages) each tensor over the ranks, in place.
Napi::Value distAllReduce(const Napi::CallbackInfo& info) {
  Group& g = groupArg(info, 0);
  auto ts = ioTensors(info, 1);
  const bool average = boolArg(info, 2);
  collective(g, "allReduce", [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : ts) works.push_back(startSum(g, t));
    return works;
  });
  if (average)
    for (auto& t : ts) t.div_(g.size);
  return info.Env().Undefined();
}

// distAllGather(group, tensor) -> [tensor of rank 0, ..., of rank size-1] (same shape on every rank).
Napi::Value distAllGather(const Napi::CallbackInfo& info) {
  Group& g = groupArg(info, 0);
  at::Tensor t = tensorArg(info, 1).detach().contiguous();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < g.size; r++) out[0].push_back(at::empty_like(t));
  std::vector<at::Tensor> in{t};
  collective(g, "allGather", [&] { return std::vector<c10::intrusive_ptr<c10d::Work>>{g.pg->allgather(out, in)}; });
  return wrapList(info.Env(), out[0]);
}

// distBarrier(group): returns once every rank has called it.
Napi::Value distBarrier(const Napi::CallbackInfo& info) {
  Group& g = groupArg(info, 0);
  collective(g, "barrier", [&] { return std::vector<c10::intrusive_ptr<c10d::Work>>{g.pg->barrier()}; });
  return info.Env().Undefined();
}

// distAllReduceGrads(group, params, bucketBytes) -> buckets used. Averages the gradients of
// `params` over the ranks as DistributedDataParallel does (PyTorch's reducer.cpp): consecutive
// gradients of one dtype and device are flattened into buckets of about bucketBytes, every
// bucket's all-reduce is started (Gloo works them off in its threads while the next bucket
// is flattened), then each result is divided by the world size and copied back. Parameters
// without a gradient are skipped: every rank must have gradients for the same parameters.
Napi::Value distAllReduceGrads(const Napi::CallbackInfo& info) {
  Group& g = groupArg(info, 0);
  const std::vector<at::Tensor> params = tensorListArg(info, 1);
  const int64_t bucketBytes = intArg(info, 2);
  if (bucketBytes < 1) throw std::invalid_argument("bucketBytes must be >= 1, got " + std::to_string(bucketBytes));
  at::NoGradGuard noGrad;
  std::vector<std::vector<at::Tensor>> buckets;  // the gradients of each bucket
  int64_t bytes = 0;
  for (const auto& p : params) {
    at::Tensor grad = p.grad();
    if (!grad.defined()) continue;
    const bool fits = !buckets.empty() && bytes < bucketBytes && buckets.back()[0].scalar_type() == grad.scalar_type() &&
                      buckets.back()[0].device() == grad.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(grad);
    bytes += grad.numel() * static_cast<int64_t>(grad.element_size());
  }
  std::vector<at::Tensor> flats;
  collective(g, "allReduce of the gradients", [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& b : buckets) {
      std::vector<at::Tensor> views;
      for (auto& t : b) views.push_back(t.reshape({-1}));
      flats.push_back(at::cat(views));  // [sum of numel]
      works.push_back(startSum(g, flats.back()));
    }
    return works;
  });
  for (size_t i = 0; i < buckets.size(); i++) {
    at::Tensor& flat = flats[i];
    flat.div_(g.size);
    int64_t offset = 0;
    for (auto& t : buckets[i]) {
      t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
  return Napi::Number::New(info.Env(), static_cast<double>(buckets.size()));
}

}  // namespace

void registerDist(Registry& r) {
  r.add("distAvailable", [](const Napi::CallbackInfo& info) -> Napi::Value { return Napi::String::New(info.Env(), ""); });
  r.add("distInit", distInit);
  r.add("distDestroy", distDestroy);
  r.add("distBroadcast", distBroadcast);
  r.add("distAllReduce", distAllReduce);
  r.add("distAllGather", distAllGather);
  r.add("distBarrier", distBarrier);
  r.add("distAllReduceGrads", distAllReduceGrads);
}

#else  // no Gloo headers at build time

void registerDist(Registry& r) {
  static const char* why =
      "this addon was built without c10d's Gloo process group (Gloo's headers were not found: on Debian, apt-get install libgloo-dev, "
      "then rebuild with npm run build:native)";
  r.add("distAvailable", [](const Napi::CallbackInfo& info) -> Napi::Value { return Napi::String::New(info.Env(), why); });
  r.add("distInit", [](const Napi::CallbackInfo&) -> Napi::Value { throw std::runtime_error(why); });
}

#endif

}  // namespace diffuse
