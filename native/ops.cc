// Elementwise math, reductions, shape ops, matmul, in-place updates and casts.
// Unary, binary and reduction ops are dispatched through name tables that JS reads
// at load time (unaryNames() etc.), so the two sides cannot drift.
#include "common.h"

#include <algorithm>

namespace diffuse {

// ---- unary ----
using Unary = at::Tensor (*)(const at::Tensor&);
static const std::pair<const char*, Unary> kUnary[] = {
    {"neg", [](const at::Tensor& t) { return at::neg(t); }},
    {"abs", [](const at::Tensor& t) { return at::abs(t); }},
    {"exp", [](const at::Tensor& t) { return at::exp(t); }},
    {"log", [](const at::Tensor& t) { return at::log(t); }},
    {"sqrt", [](const at::Tensor& t) { return at::sqrt(t); }},
    {"rsqrt", [](const at::Tensor& t) { return at::rsqrt(t); }},
    {"sin", [](const at::Tensor& t) { return at::sin(t); }},
    {"cos", [](const at::Tensor& t) { return at::cos(t); }},
    {"tanh", [](const at::Tensor& t) { return at::tanh(t); }},
    {"sigmoid", [](const at::Tensor& t) { return at::sigmoid(t); }},
    {"silu", [](const at::Tensor& t) { return at::silu(t); }},
    {"relu", [](const at::Tensor& t) { return at::relu(t); }},
    {"gelu", [](const at::Tensor& t) { return at::gelu(t); }},
    {"geluTanh", [](const at::Tensor& t) { return at::gelu(t, "tanh"); }},
    {"square", [](const at::Tensor& t) { return at::square(t); }},
    {"reciprocal", [](const at::Tensor& t) { return at::reciprocal(t); }},
    {"sign", [](const at::Tensor& t) { return at::sign(t); }},
    {"floor", [](const at::Tensor& t) { return at::floor(t); }},
    {"ceil", [](const at::Tensor& t) { return at::ceil(t); }},
    {"round", [](const at::Tensor& t) { return at::round(t); }},
    {"log1p", [](const at::Tensor& t) { return at::log1p(t); }},
    {"expm1", [](const at::Tensor& t) { return at::expm1(t); }},
    {"log2", [](const at::Tensor& t) { return at::log2(t); }},
    {"erf", [](const at::Tensor& t) { return at::erf(t); }},
    {"erfinv", [](const at::Tensor& t) { return at::erfinv(t); }},
    {"softplus", [](const at::Tensor& t) { return at::softplus(t); }},
    {"logicalNot", [](const at::Tensor& t) { return at::logical_not(t); }},
    {"isnan", [](const at::Tensor& t) { return at::isnan(t); }},
    {"isfinite", [](const at::Tensor& t) { return at::isfinite(t); }},
};
static constexpr uint32_t kNumUnary = sizeof(kUnary) / sizeof(kUnary[0]);

// ---- binary (tensor op tensor, or tensor op scalar) ----
using Binary = at::Tensor (*)(const at::Tensor&, const at::Tensor&);
static const std::pair<const char*, Binary> kBinary[] = {
    {"add", [](const at::Tensor& a, const at::Tensor& b) { return at::add(a, b); }},
    {"sub", [](const at::Tensor& a, const at::Tensor& b) { return at::sub(a, b); }},
    {"mul", [](const at::Tensor& a, const at::Tensor& b) { return at::mul(a, b); }},
    {"div", [](const at::Tensor& a, const at::Tensor& b) { return at::div(a, b); }},
    {"pow", [](const at::Tensor& a, const at::Tensor& b) { return at::pow(a, b); }},
    {"maximum", [](const at::Tensor& a, const at::Tensor& b) { return at::maximum(a, b); }},
    {"minimum", [](const at::Tensor& a, const at::Tensor& b) { return at::minimum(a, b); }},
    {"remainder", [](const at::Tensor& a, const at::Tensor& b) { return at::remainder(a, b); }},
    {"atan2", [](const at::Tensor& a, const at::Tensor& b) { return at::atan2(a, b); }},
    {"eq", [](const at::Tensor& a, const at::Tensor& b) { return at::eq(a, b); }},
    {"ne", [](const at::Tensor& a, const at::Tensor& b) { return at::ne(a, b); }},
    {"lt", [](const at::Tensor& a, const at::Tensor& b) { return at::lt(a, b); }},
    {"le", [](const at::Tensor& a, const at::Tensor& b) { return at::le(a, b); }},
    {"gt", [](const at::Tensor& a, const at::Tensor& b) { return at::gt(a, b); }},
    {"ge", [](const at::Tensor& a, const at::Tensor& b) { return at::ge(a, b); }},
    {"logicalAnd", [](const at::Tensor& a, const at::Tensor& b) { return at::logical_and(a, b); }},
    {"logicalOr", [](const at::Tensor& a, const at::Tensor& b) { return at::logical_or(a, b); }},
};
static constexpr uint32_t kNumBinary = sizeof(kBinary) / sizeof(kBinary[0]);

// ---- reductions over dims (all dims when dims is null) ----
using Reduce = at::Tensor (*)(const at::Tensor&, at::IntArrayRef, bool);
static const std::pair<const char*, Reduce> kReduce[] = {
    {"sum", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::sum(t, d, k); }},
    {"mean", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::mean(t, d, k); }},
    {"max", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::amax(t, d, k); }},
    {"min", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::amin(t, d, k); }},
    {"logsumexp", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::logsumexp(t, d, k); }},
    {"var", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::var(t, d, true, k); }},
    {"varBiased", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::var(t, d, false, k); }},
    {"std", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::std(t, d, true, k); }},
    {"stdBiased", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::std(t, d, false, k); }},
    {"prod", [](const at::Tensor& t, at::IntArrayRef d, bool k) {
       // at::prod reduces one dim at a time; go from the last so indices stay valid.
       std::vector<int64_t> dims(d.begin(), d.end());
       std::sort(dims.rbegin(), dims.rend());
       at::Tensor r = t;
       for (int64_t dim : dims) r = at::prod(r, dim, k);
       return dims.empty() ? t.clone() : r;
     }},
    {"all", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return at::logical_not(t).sum(d, k).eq(0); }},
    {"any", [](const at::Tensor& t, at::IntArrayRef d, bool k) { return t.ne(0).sum(d, k).gt(0); }},
};
static constexpr uint32_t kNumReduce = sizeof(kReduce) / sizeof(kReduce[0]);

template <typename T, uint32_t N>
static Napi::Value names(Napi::Env env, const std::pair<const char*, T> (&table)[N]) {
  auto arr = Napi::Array::New(env, N);
  for (uint32_t i = 0; i < N; i++) arr.Set(i, Napi::String::New(env, table[i].first));
  return arr;
}

static uint32_t opIndex(const Napi::CallbackInfo& info, size_t i, uint32_t n) {
  int64_t k = intArg(info, i);
  if (k < 0 || k >= n) throw std::invalid_argument("op index out of range");
  return static_cast<uint32_t>(k);
}

static Napi::Value opNames(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("unary", names(info.Env(), kUnary));
  o.Set("binary", names(info.Env(), kBinary));
  o.Set("reduce", names(info.Env(), kReduce));
  return o;
}

// unary(op, t)
static Napi::Value unary(const Napi::CallbackInfo& info) {
  auto& op = kUnary[opIndex(info, 0, kNumUnary)];
  currentOp = op.first;
  return wrap(info.Env(), op.second(tensorArg(info, 1)));
}

// A number operand becomes a "wrapped number" tensor: it takes part in type
// promotion the way a Python scalar does (int tensor + 2 stays int, + 2.5 is float).
static at::Tensor operand(const Napi::CallbackInfo& info, size_t i, const at::Tensor& like) {
  if (info[i].IsExternal()) return tensorArg(info, i);
  at::Tensor s = c10::scalar_to_tensor(scalarArg(info, i), like.device());
  s.unsafeGetTensorImpl()->set_wrapped_number(true);
  return s;
}

// binary(op, a, b): b is a tensor or a number.
static Napi::Value binary(const Napi::CallbackInfo& info) {
  auto& op = kBinary[opIndex(info, 0, kNumBinary)];
  currentOp = op.first;
  const at::Tensor& a = tensorArg(info, 1);
  return wrap(info.Env(), op.second(a, operand(info, 2, a)));
}

// rbinary(op, a, b): b op a, for number op tensor (e.g. 1 - t).
static Napi::Value rbinary(const Napi::CallbackInfo& info) {
  auto& op = kBinary[opIndex(info, 0, kNumBinary)];
  currentOp = op.first;
  const at::Tensor& a = tensorArg(info, 1);
  return wrap(info.Env(), op.second(operand(info, 2, a), a));
}

// addScaled(a, b, alpha) = a + alpha * b
static Napi::Value addScaled(const Napi::CallbackInfo& info) {
  const at::Tensor& a = tensorArg(info, 0);
  return wrap(info.Env(), at::add(a, operand(info, 1, a), scalarArg(info, 2)));
}

static std::vector<int64_t> allDims(const at::Tensor& t) {
  std::vector<int64_t> d(t.dim());
  for (int64_t i = 0; i < t.dim(); i++) d[i] = i;
  return d;
}

// reduce(op, t, dims|null, keepdim)
static Napi::Value reduce(const Napi::CallbackInfo& info) {
  auto& op = kReduce[opIndex(info, 0, kNumReduce)];
  currentOp = op.first;
  const at::Tensor& t = tensorArg(info, 1);
  auto dims = isNullish(info[2]) ? allDims(t) : intsArg(info, 2);
  return wrap(info.Env(), op.second(t, dims, boolArg(info, 3)));
}

// norm(t, p, dims|null, keepdim): the vector p-norm.
static Napi::Value norm(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  auto dims = isNullish(info[2]) ? allDims(t) : intsArg(info, 2);
  return wrap(info.Env(), at::linalg_vector_norm(t, scalarArg(info, 1), dims, boolArg(info, 3), c10::nullopt));
}

// argmax(t, dim|null, keepdim), argmin
static Napi::Value argmax(const Napi::CallbackInfo& info) {
  c10::optional<int64_t> dim;
  if (!isNullish(info[1])) dim = intArg(info, 1);
  return wrap(info.Env(), at::argmax(tensorArg(info, 0), dim, boolArg(info, 2)));
}

static Napi::Value argmin(const Napi::CallbackInfo& info) {
  c10::optional<int64_t> dim;
  if (!isNullish(info[1])) dim = intArg(info, 1);
  return wrap(info.Env(), at::argmin(tensorArg(info, 0), dim, boolArg(info, 2)));
}

// cumsum(t, dim)
static Napi::Value cumsum(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::cumsum(tensorArg(info, 0), intArg(info, 1)));
}

// topk(t, k, dim, largest) -> [values, indices]
static Napi::Value topk(const Napi::CallbackInfo& info) {
  auto r = at::topk(tensorArg(info, 0), intArg(info, 1), intArg(info, 2), boolArg(info, 3, true), true);
  return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}

// sort(t, dim, descending) -> [values, indices]
static Napi::Value sort(const Napi::CallbackInfo& info) {
  auto r = at::sort(tensorArg(info, 0), intArg(info, 1), boolArg(info, 2));
  return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}

// ---- ternary and friends ----
// where(cond, a, b): a and b are tensors or numbers.
static Napi::Value where(const Napi::CallbackInfo& info) {
  const at::Tensor& c = tensorArg(info, 0);
  if (!info[1].IsExternal() && !info[2].IsExternal()) {
    // Two numbers: as torch.where(cond, Scalar, Scalar), both become tensors of their
    // common type (two wrapped numbers would trip an internal assert in the kernel).
    at::Scalar sa = scalarArg(info, 1), sb = scalarArg(info, 2);
    auto opts = c.options().dtype(at::result_type(sa, sb));
    return wrap(info.Env(), at::where(c, at::scalar_tensor(sa, opts), at::scalar_tensor(sb, opts)));
  }
  at::Tensor a = info[1].IsExternal() ? tensorArg(info, 1) : at::Tensor();
  at::Tensor b = info[2].IsExternal() ? tensorArg(info, 2) : at::Tensor();
  const at::Tensor& like = a.defined() ? a : (b.defined() ? b : c);
  return wrap(info.Env(), at::where(c, operand(info, 1, like), operand(info, 2, like)));
}

// lerp(a, b, w): a + w (b - a), w a tensor or a number.
static Napi::Value lerp(const Napi::CallbackInfo& info) {
  const at::Tensor& a = tensorArg(info, 0);
  const at::Tensor& b = tensorArg(info, 1);
  if (info[2].IsExternal()) return wrap(info.Env(), at::lerp(a, b, tensorArg(info, 2)));
  return wrap(info.Env(), at::lerp(a, b, scalarArg(info, 2)));
}

// clamp(t, min|null, max|null)
static Napi::Value clamp(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  c10::optional<at::Scalar> lo, hi;
  if (!isNullish(info[1])) lo = scalarArg(info, 1);
  if (!isNullish(info[2])) hi = scalarArg(info, 2);
  return wrap(info.Env(), at::clamp(t, lo, hi));
}

static Napi::Value matmul(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::matmul(tensorArg(info, 0), tensorArg(info, 1)));
}

static Napi::Value bmm(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::bmm(tensorArg(info, 0), tensorArg(info, 1)));
}

// ---- shape ----
static Napi::Value reshape(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).reshape(intsArg(info, 1)));
}

static Napi::Value view(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).view(intsArg(info, 1)));
}

static Napi::Value permute(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).permute(intsArg(info, 1)));
}

static Napi::Value transpose(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).transpose(intArg(info, 1), intArg(info, 2)));
}

static Napi::Value expand(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).expand(intsArg(info, 1)));
}

static Napi::Value cat(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::cat(tensorListArg(info, 0), intArg(info, 1)));
}

static Napi::Value stack(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::stack(tensorListArg(info, 0), intArg(info, 1)));
}

// split(t, sizes, dim): sizes is a chunk size (number) or the list of sizes.
static Napi::Value split(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  int64_t dim = intArg(info, 2);
  if (info[1].IsNumber()) return wrapList(info.Env(), at::split(t, intArg(info, 1), dim));
  return wrapList(info.Env(), at::split_with_sizes(t, intsArg(info, 1), dim));
}

static Napi::Value chunk(const Napi::CallbackInfo& info) {
  return wrapList(info.Env(), at::chunk(tensorArg(info, 0), intArg(info, 1), intArg(info, 2)));
}

static Napi::Value unbind(const Napi::CallbackInfo& info) {
  return wrapList(info.Env(), at::unbind(tensorArg(info, 0), intArg(info, 1)));
}

// narrow(t, dim, start, length)
static Napi::Value narrow(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).narrow(intArg(info, 1), intArg(info, 2), intArg(info, 3)));
}

// slice(t, dim, start|null, end|null, step)
static Napi::Value slice(const Napi::CallbackInfo& info) {
  c10::optional<int64_t> start, end;
  if (!isNullish(info[2])) start = intArg(info, 2);
  if (!isNullish(info[3])) end = intArg(info, 3);
  return wrap(info.Env(), tensorArg(info, 0).slice(intArg(info, 1), start, end, intArg(info, 4)));
}

// select(t, dim, index): drops dim.
static Napi::Value select(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).select(intArg(info, 1), intArg(info, 2)));
}

static Napi::Value indexSelect(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::index_select(tensorArg(info, 0), intArg(info, 1), tensorArg(info, 2)));
}

static Napi::Value gather(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::gather(tensorArg(info, 0), intArg(info, 1), tensorArg(info, 2)));
}

// scatterAdd(t, dim, index, src): out-of-place t with src added at index.
static Napi::Value scatterAdd(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::scatter_add(tensorArg(info, 0), intArg(info, 1), tensorArg(info, 2), tensorArg(info, 3)));
}

// maskedFill(t, mask, value)
static Napi::Value maskedFill(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::masked_fill(tensorArg(info, 0), tensorArg(info, 1), scalarArg(info, 2)));
}

// squeeze(t, dim|null)
static Napi::Value squeeze(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  return wrap(info.Env(), isNullish(info[1]) ? t.squeeze() : t.squeeze(intArg(info, 1)));
}

static Napi::Value unsqueeze(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).unsqueeze(intArg(info, 1)));
}

// flatten(t, start, end)
static Napi::Value flatten(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).flatten(intArg(info, 1), intArg(info, 2)));
}

static Napi::Value repeat(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).repeat(intsArg(info, 1)));
}

static Napi::Value flip(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).flip(intsArg(info, 1)));
}

static Napi::Value roll(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).roll(intsArg(info, 1), intsArg(info, 2)));
}

// pad(t, pads, mode, value): pads as in torch.nn.functional.pad (last dim first).
static Napi::Value pad(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  std::string mode = strArg(info, 2);
  c10::optional<double> value;
  if (mode == "constant") value = optNumArg(info, 3);
  return wrap(info.Env(), at::pad(t, intsArg(info, 1), mode, value));
}

static Napi::Value triu(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::triu(tensorArg(info, 0), intArg(info, 1)));
}

static Napi::Value tril(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::tril(tensorArg(info, 0), intArg(info, 1)));
}

// ---- copies and casts ----
static Napi::Value contiguous(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).contiguous());
}

static Napi::Value clone(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensorArg(info, 0).clone());
}

static Napi::Value isContiguous(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tensorArg(info, 0).is_contiguous());
}

// to(t, dtype|null, device|null)
static Napi::Value to(const Napi::CallbackInfo& info) {
  const at::Tensor& t = tensorArg(info, 0);
  auto dtype = isNullish(info[1]) ? t.scalar_type() : dtypeArg(info, 1);
  auto device = isNullish(info[2]) ? t.device() : deviceArg(info, 2);
  return wrap(info.Env(), t.to(device, dtype));
}

// ---- in-place updates (optimizers, EMA, buffers) ----
static Napi::Value inplace(const Napi::CallbackInfo& info, at::Tensor& (*op)(at::Tensor&, const at::Tensor&)) {
  at::Tensor t = tensorArg(info, 0);
  op(t, operand(info, 1, t));
  return info.Env().Undefined();
}

static Napi::Value add_(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.add_(operand(info, 1, t), isNullish(info[2]) ? at::Scalar(1) : scalarArg(info, 2));
  return info.Env().Undefined();
}
static Napi::Value sub_(const Napi::CallbackInfo& info) {
  return inplace(info, [](at::Tensor& a, const at::Tensor& b) -> at::Tensor& { return a.sub_(b); });
}
static Napi::Value mul_(const Napi::CallbackInfo& info) {
  return inplace(info, [](at::Tensor& a, const at::Tensor& b) -> at::Tensor& { return a.mul_(b); });
}
static Napi::Value div_(const Napi::CallbackInfo& info) {
  return inplace(info, [](at::Tensor& a, const at::Tensor& b) -> at::Tensor& { return a.div_(b); });
}
static Napi::Value copy_(const Napi::CallbackInfo& info) {
  return inplace(info, [](at::Tensor& a, const at::Tensor& b) -> at::Tensor& { return a.copy_(b); });
}

static Napi::Value zero_(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.zero_();
  return info.Env().Undefined();
}

static Napi::Value fill_(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.fill_(scalarArg(info, 1));
  return info.Env().Undefined();
}

// lerp_(t, end, weight): t += weight (end - t), the EMA update.
static Napi::Value lerp_(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  if (info[2].IsExternal()) t.lerp_(tensorArg(info, 1), tensorArg(info, 2));
  else t.lerp_(tensorArg(info, 1), scalarArg(info, 2));
  return info.Env().Undefined();
}

// addcmul_(t, a, b, value): t += value a b; addcdiv_ likewise with a / b.
static Napi::Value addcmul_(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.addcmul_(tensorArg(info, 1), tensorArg(info, 2), scalarArg(info, 3));
  return info.Env().Undefined();
}
static Napi::Value addcdiv_(const Napi::CallbackInfo& info) {
  at::Tensor t = tensorArg(info, 0);
  t.addcdiv_(tensorArg(info, 1), tensorArg(info, 2), scalarArg(info, 3));
  return info.Env().Undefined();
}

void registerOps(Registry& r) {
  r.add("opNames", opNames);
  r.add("unary", unary);
  r.add("binary", binary);
  r.add("rbinary", rbinary);
  r.add("addScaled", addScaled);
  r.add("reduce", reduce);
  r.add("norm", norm);
  r.add("argmax", argmax);
  r.add("argmin", argmin);
  r.add("cumsum", cumsum);
  r.add("topk", topk);
  r.add("sort", sort);
  r.add("where", where);
  r.add("lerp", lerp);
  r.add("clamp", clamp);
  r.add("matmul", matmul);
  r.add("bmm", bmm);
  r.add("reshape", reshape);
  r.add("view", view);
  r.add("permute", permute);
  r.add("transpose", transpose);
  r.add("expand", expand);
  r.add("cat", cat);
  r.add("stack", stack);
  r.add("split", split);
  r.add("chunk", chunk);
  r.add("unbind", unbind);
  r.add("narrow", narrow);
  r.add("slice", slice);
  r.add("select", select);
  r.add("indexSelect", indexSelect);
  r.add("gather", gather);
  r.add("scatterAdd", scatterAdd);
  r.add("maskedFill", maskedFill);
  r.add("squeeze", squeeze);
  r.add("unsqueeze", unsqueeze);
  r.add("flatten", flatten);
  r.add("repeat", repeat);
  r.add("flip", flip);
  r.add("roll", roll);
  r.add("pad", pad);
  r.add("triu", triu);
  r.add("tril", tril);
  r.add("contiguous", contiguous);
  r.add("clone", clone);
  r.add("isContiguous", isContiguous);
  r.add("to", to);
  r.add("add_", add_);
  r.add("sub_", sub_);
  r.add("mul_", mul_);
  r.add("div_", div_);
  r.add("copy_", copy_);
  r.add("zero_", zero_);
  r.add("fill_", fill_);
  r.add("lerp_", lerp_);
  r.add("addcmul_", addcmul_);
  r.add("addcdiv_", addcdiv_);
}

}  // namespace diffuse
