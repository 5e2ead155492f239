// The functional layers of neural networks and the losses.
#include "common.h"

#include <torch/version.h>

#include <cmath>

namespace diffuse {

// linear(x, w, b|null)
static Napi::Value linear(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::linear(tensorArg(info, 0), tensorArg(info, 1), optTensorArg(info, 2)));
}

// conv2d(x, w, b|null, stride, padding, dilation, groups)
static Napi::Value conv2d(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::conv2d(tensorArg(info, 0), tensorArg(info, 1), optTensorArg(info, 2), intsArg(info, 3),
                                     intsArg(info, 4), intsArg(info, 5), intArg(info, 6)));
}

// convTranspose2d(x, w, b|null, stride, padding, outputPadding, groups, dilation)
static Napi::Value convTranspose2d(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::conv_transpose2d(tensorArg(info, 0), tensorArg(info, 1), optTensorArg(info, 2),
                                               intsArg(info, 3), intsArg(info, 4), intsArg(info, 5), intArg(info, 6),
                                               intsArg(info, 7)));
}

// groupNorm(x, groups, w|null, b|null, eps)
static Napi::Value groupNorm(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::group_norm(tensorArg(info, 0), intArg(info, 1), optTensorArg(info, 2),
                                         optTensorArg(info, 3), numArg(info, 4)));
}

// layerNorm(x, normalizedShape, w|null, b|null, eps)
static Napi::Value layerNorm(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::layer_norm(tensorArg(info, 0), intsArg(info, 1), optTensorArg(info, 2),
                                         optTensorArg(info, 3), numArg(info, 4)));
}

static Napi::Value softmax(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::softmax(tensorArg(info, 0), intArg(info, 1)));
}

static Napi::Value logSoftmax(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::log_softmax(tensorArg(info, 0), intArg(info, 1)));
}

// dropout(x, p, gen): inverted dropout with an explicit generator (training mode).
static Napi::Value dropout(const Napi::CallbackInfo& info) {
  const at::Tensor& x = tensorArg(info, 0);
  double p = numArg(info, 1);
  if (p <= 0) return wrap(info.Env(), x.alias());
  if (p >= 1) return wrap(info.Env(), x * 0);
  at::Tensor keep = at::empty(x.sizes(), x.options().device(at::kCPU)).bernoulli_(1 - p, generatorArg(info, 2));
  return wrap(info.Env(), x * keep.to(x.device()).div_(1 - p));
}

// interpolate(x, mode, size|null, scale|null, alignCorners): 2D (NCHW) resampling.
static Napi::Value interpolate(const Napi::CallbackInfo& info) {
  const at::Tensor& x = tensorArg(info, 0);
  if (x.dim() != 4) throw std::invalid_argument("interpolate expects a 4-D [N, C, H, W] tensor, got " + c10::str(x.sizes()));
  std::string mode = strArg(info, 1);
  std::vector<int64_t> size;
  c10::optional<double> sh, sw;
  if (!isNullish(info[2])) {
    size = intsArg(info, 2);
    if (size.size() == 1) size.push_back(size[0]);
  } else {
    std::vector<double> s;
    if (info[3].IsNumber()) s = {numArg(info, 3), numArg(info, 3)};
    else {
      auto arr = info[3].As<Napi::Array>();
      s = {arr.Get(0u).As<Napi::Number>().DoubleValue(), arr.Get(1u).As<Napi::Number>().DoubleValue()};
    }
    size = {static_cast<int64_t>(std::floor(x.size(2) * s[0])), static_cast<int64_t>(std::floor(x.size(3) * s[1]))};
    sh = s[0];
    sw = s[1];
  }
  bool align = boolArg(info, 4);
  if (mode == "nearest") return wrap(info.Env(), at::upsample_nearest2d(x, size, sh, sw));
  if (mode == "bilinear") return wrap(info.Env(), at::upsample_bilinear2d(x, size, align, sh, sw));
  if (mode == "bicubic") return wrap(info.Env(), at::upsample_bicubic2d(x, size, align, sh, sw));
  if (mode == "area") return wrap(info.Env(), at::adaptive_avg_pool2d(x, size));
  throw std::invalid_argument("mode must be nearest, bilinear, bicubic or area, got " + mode);
}

// avgPool2d(x, kernel, stride, padding)
static Napi::Value avgPool2d(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::avg_pool2d(tensorArg(info, 0), intsArg(info, 1), intsArg(info, 2), intsArg(info, 3)));
}

// maxPool2d(x, kernel, stride, padding)
static Napi::Value maxPool2d(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::max_pool2d(tensorArg(info, 0), intsArg(info, 1), intsArg(info, 2), intsArg(info, 3)));
}

static Napi::Value adaptiveAvgPool2d(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::adaptive_avg_pool2d(tensorArg(info, 0), intsArg(info, 1)));
}

static Napi::Value pixelShuffle(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::pixel_shuffle(tensorArg(info, 0), intArg(info, 1)));
}

static Napi::Value pixelUnshuffle(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::pixel_unshuffle(tensorArg(info, 0), intArg(info, 1)));
}

// embedding(weight, indices)
static Napi::Value embedding(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::embedding(tensorArg(info, 0), tensorArg(info, 1)));
}

// sdpa(q, k, v, mask|null, dropoutP, isCausal, scale|null, gen|null):
// softmax(q k^T * scale + mask) v over the last two dims. libtorch 2.x has a fused
// kernel; 1.13 composes it from matmul and softmax (the math path of the kernel).
static Napi::Value sdpa(const Napi::CallbackInfo& info) {
  const at::Tensor& q = tensorArg(info, 0);
  const at::Tensor& k = tensorArg(info, 1);
  const at::Tensor& v = tensorArg(info, 2);
  at::Tensor mask = optTensorArg(info, 3);
  double p = numArg(info, 4);
  bool causal = boolArg(info, 5);
  c10::optional<double> scale = optNumArg(info, 6);
#if TORCH_VERSION_MAJOR >= 2 && TORCH_VERSION_MINOR >= 1 || TORCH_VERSION_MAJOR > 2
  if (p == 0) {
    c10::optional<at::Tensor> m;
    if (mask.defined()) m = mask;
    return wrap(info.Env(), at::scaled_dot_product_attention(q, k, v, m, 0.0, causal, scale));
  }
#endif
  double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  at::Tensor logits = at::matmul(q, k.transpose(-2, -1)) * s;  // [..., Lq, Lk]
  if (causal) {
    at::Tensor keep = at::ones({q.size(-2), k.size(-2)}, q.options().dtype(at::kBool)).tril();
    logits = logits.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
  }
  if (mask.defined()) {
    if (mask.scalar_type() == at::kBool) logits = logits.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
    else logits = logits + mask;
  }
  at::Tensor attn = at::softmax(logits, -1);
  if (p > 0) {
    at::Tensor keep = at::empty(attn.sizes(), attn.options().device(at::kCPU)).bernoulli_(1 - p, generatorArg(info, 7));
    attn = attn * keep.to(attn.device()).div_(1 - p);
  }
  return wrap(info.Env(), at::matmul(attn, v));
}

static int64_t reduction(const std::string& r) {
  if (r == "mean") return at::Reduction::Mean;
  if (r == "sum") return at::Reduction::Sum;
  if (r == "none") return at::Reduction::None;
  throw std::invalid_argument("reduction must be mean, sum or none, got " + r);
}

// mseLoss(x, target, reduction)
static Napi::Value mseLoss(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::mse_loss(tensorArg(info, 0), tensorArg(info, 1), reduction(strArg(info, 2))));
}

// crossEntropy(logits, target, reduction, labelSmoothing, weight|null): target holds
// class indices (int64) or class probabilities (float, same shape as logits).
static Napi::Value crossEntropy(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), at::cross_entropy_loss(tensorArg(info, 0), tensorArg(info, 1), optTensorArg(info, 4),
                                                 reduction(strArg(info, 2)), -100, numArg(info, 3)));
}

void registerNN(Registry& r) {
  r.add("linear", linear);
  r.add("conv2d", conv2d);
  r.add("convTranspose2d", convTranspose2d);
  r.add("groupNorm", groupNorm);
  r.add("layerNorm", layerNorm);
  r.add("softmax", softmax);
  r.add("logSoftmax", logSoftmax);
  r.add("dropout", dropout);
  r.add("interpolate", interpolate);
  r.add("avgPool2d", avgPool2d);
  r.add("maxPool2d", maxPool2d);
  r.add("adaptiveAvgPool2d", adaptiveAvgPool2d);
  r.add("pixelShuffle", pixelShuffle);
  r.add("pixelUnshuffle", pixelUnshuffle);
  r.add("embedding", embedding);
  r.add("sdpa", sdpa);
  r.add("mseLoss", mseLoss);
  r.add("crossEntropy", crossEntropy);
}

}  // namespace diffuse
