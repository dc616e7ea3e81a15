#pragma once
// The image noise-prediction network: the UNet of minimal-diffusion (VSehwag/
// minimal-diffusion, unets.py), itself OpenAI guided-diffusion's UNetModel.
//
// Parameter names and shapes follow minimal-diffusion's state_dict name for name, so
// its checkpoints load without renaming (see UNetOptions::paper):
//   time_embed.{0,2}            Linear(base, T), Linear(T, T), T = base * time_embed_factor
//   label_emb                   Embedding(num_classes, T)           (conditional only)
//   input_blocks.0.0            Conv2d(in_channels, base * mult[0], 3)
//   input_blocks.N.0            ResBlock; .N.1 AttentionBlock where the level has attention
//   input_blocks.N.0            the level's downsampler: a ResBlock (resblock_updown) or a
//                               Downsample whose conv is `op`
//   middle_block.{0,1,2}        ResBlock, AttentionBlock, ResBlock
//   output_blocks.N.{0,1,2}     ResBlock, [AttentionBlock], [upsampler: ResBlock or
//                               Upsample whose conv is `conv`]
//   out.{0,2}                   GroupNorm32, Conv2d(base * mult[0], out_channels, 3)
// ResBlock:       in_layers.0 (GroupNorm32), in_layers.2 (conv 3x3), emb_layers.1 (Linear
//                 T -> 2C with scale-shift norm, else C), out_layers.0 (GroupNorm32),
//                 out_layers.3 (conv 3x3, zero-initialised), skip_connection (conv 1x1,
//                 only where the channel count changes).
// AttentionBlock: norm (GroupNorm32), qkv (Conv1d C -> 3C), proj_out (Conv1d, zero-init).
// The zero-initialised output convolution makes a fresh network predict exactly 0.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/models/module_copy.hpp"

namespace diffctl::models {

struct UNetOptions {
  int64_t image_size = 32;
  int64_t in_channels = 3;
  int64_t base_width = 64;  // minimal-diffusion's model_channels
  int64_t out_channels = 3;
  std::vector<int> channel_mult = {1, 2, 2, 2};  // one entry per resolution level
  int64_t blocks_per_level = 3;                  // num_res_blocks
  // Image resolutions (side lengths) that get self-attention. As in minimal-diffusion,
  // resolution r maps to the downsample factor image_size / r (integer division), and
  // level l (factor 2^l) has attention when some r maps to 2^l: for 32x32 images
  // {32, 16, 8} means levels 0, 1, 2; for 28x28 images {28, 14, 7} means the same.
  // The middle block always has attention.
  std::vector<int> attention_resolutions = {32, 16, 8};
  double dropout = 0.1;
  int64_t num_classes = 0;        // 0: unconditional
  int64_t num_heads = 4;          // used when head_channels <= 0
  int64_t head_channels = 64;     // > 0: heads = channels / head_channels (num_head_channels)
  int64_t time_embed_factor = 4;  // time embedding width = base_width * factor
  // GroupNorm groups; minimal-diffusion uses 32 (GroupNorm32). Fewer groups allow
  // narrower networks (every level's channel count must be a multiple).
  int64_t norm_groups = 32;
  bool scale_shift_norm = true;     // FiLM-like conditioning of the ResBlocks on time
  bool resblock_updown = true;      // down/upsample with ResBlocks rather than Down/Upsample
  bool conv_resample = true;        // Down/Upsample learn a conv (when !resblock_updown)
  bool new_attention_order = true;  // QKVAttention (split q,k,v first) vs the legacy order

  // minimal-diffusion's `UNet` architecture (its CIFAR-10 model for 32, 3, 10):
  // base 64, mult (1,2,2,2), 3 ResBlocks per level, attention at the first three
  // levels, dropout 0.1, 64-channel heads, scale-shift norm, ResBlock up/downsampling,
  // the new attention order. 14,419,651 parameters for CIFAR-10.
  static UNetOptions paper(int64_t image_size = 32, int64_t channels = 3, int64_t classes = 10) {
    UNetOptions options;
    options.image_size = image_size;
    options.in_channels = channels;
    options.out_channels = channels;
    options.num_classes = classes;
    options.attention_resolutions = {static_cast<int>(image_size), static_cast<int>(image_size / 2),
                                     static_cast<int>(image_size / 4)};
    return options;
  }

  // A network that trains on a 2-core CPU: base 16, mult (1,2,2), one ResBlock per
  // level, GroupNorm with 8 groups, attention only at the lowest resolution (and the
  // middle block) with 16-channel heads, strided-conv downsampling and nearest + conv
  // upsampling. 28x28 or 32x32 images; 0.30M parameters for 1 channel and 10 classes.
  // Forward + backward of 64 1x28x28 images takes about 0.3 s on one busy CPU core;
  // base_width 32 (norm_groups may stay 8) has 4x the parameters and ~2.5x the time.
  static UNetOptions small(int64_t image_size, int64_t channels, int64_t classes = 0) {
    UNetOptions options;
    options.image_size = image_size;
    options.in_channels = channels;
    options.out_channels = channels;
    options.num_classes = classes;
    options.base_width = 16;
    options.norm_groups = 8;
    options.channel_mult = {1, 2, 2};
    options.blocks_per_level = 1;
    options.attention_resolutions = {static_cast<int>(image_size / 4)};
    options.head_channels = 16;
    options.resblock_updown = false;
    return options;
  }
};

namespace detail {

// GroupNorm (32 groups in minimal-diffusion's GroupNorm32), computed in at least
// float32: half-precision activations are normalised in float32.
inline torch::nn::GroupNorm make_group_norm(int64_t groups, int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels));
}

inline torch::Tensor apply_norm32(torch::nn::GroupNormImpl& norm, const torch::Tensor& x) {
  const auto type = x.scalar_type();
  if (type != torch::kHalf && type != torch::kBFloat16) return norm.forward(x);
  return torch::group_norm(x.to(torch::kFloat), norm.options.num_groups(), norm.weight.to(torch::kFloat),
                           norm.bias.to(torch::kFloat), norm.options.eps())
      .to(type);
}

inline torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

template <class Holder>
Holder zeroed(Holder module) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : module->parameters()) parameter.zero_();
  return module;
}

// The side length after one downsampling: average pooling floors, a stride-2 3x3
// convolution with padding 1 rounds up.
inline int64_t downsampled(int64_t n, bool pooled) { return pooled ? n / 2 : (n + 1) / 2; }

// The side length after one upsampling. minimal-diffusion pads a 3x3 map, upsampled
// to 6x6, on the top and left to 7x7 so that 28x28 images survive four levels
// (28 -> 14 -> 7 -> 3 -> 7); we do the same per side.
inline int64_t upsampled(int64_t n) { return 2 * n + (n == 3 ? 1 : 0); }

inline torch::Tensor upsample2x(const torch::Tensor& x) {
  const int64_t h = x.size(-2), w = x.size(-1);
  torch::Tensor out = torch::nn::functional::interpolate(
      x,
      torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{2 * h, 2 * w}).mode(torch::kNearest));
  if (h == 3 || w == 3) out = torch::constant_pad_nd(out, {w == 3 ? 1 : 0, 0, h == 3 ? 1 : 0, 0});
  return out;
}

inline torch::Tensor downsample_pool(const torch::Tensor& x) { return torch::avg_pool2d(x, {2, 2}, {2, 2}); }

enum class Resample { kNone, kUp, kDown };

// A residual block conditioned on the time (and label) embedding.
class UNetResBlockImpl : public torch::nn::Module {
 public:
  UNetResBlockImpl(int64_t channels, int64_t emb_channels, double dropout, int64_t out_channels, bool scale_shift_norm,
                   Resample resample, int64_t groups)
      : scale_shift_norm_(scale_shift_norm), resample_(resample) {
    in_norm_ = make_group_norm(groups, channels);
    in_conv_ = conv3x3(channels, out_channels);
    register_module("in_layers", torch::nn::Sequential(in_norm_, torch::nn::SiLU(), in_conv_));
    emb_linear_ = torch::nn::Linear(emb_channels, scale_shift_norm ? 2 * out_channels : out_channels);
    register_module("emb_layers", torch::nn::Sequential(torch::nn::SiLU(), emb_linear_));
    out_norm_ = make_group_norm(groups, out_channels);
    dropout_ = torch::nn::Dropout(dropout);
    out_conv_ = zeroed(conv3x3(out_channels, out_channels));
    register_module("out_layers", torch::nn::Sequential(out_norm_, torch::nn::SiLU(), dropout_, out_conv_));
    if (out_channels != channels)
      skip_ =
          register_module("skip_connection", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out_channels, 1)));
  }

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb) {
    torch::Tensor h = torch::silu(apply_norm32(*in_norm_, x));
    if (resample_ == Resample::kUp) {
      h = upsample2x(h);
      x = upsample2x(x);
    } else if (resample_ == Resample::kDown) {
      h = downsample_pool(h);
      x = downsample_pool(x);
    }
    h = in_conv_(h);
    torch::Tensor emb_out = emb_linear_(torch::silu(emb)).to(h.scalar_type()).unsqueeze(-1).unsqueeze(-1);
    if (scale_shift_norm_) {
      auto parts = emb_out.chunk(2, 1);
      h = apply_norm32(*out_norm_, h) * (1 + parts[0]) + parts[1];
    } else {
      h = apply_norm32(*out_norm_, h + emb_out);
    }
    h = out_conv_(dropout_(torch::silu(h)));
    return (skip_ ? skip_(x) : x) + h;
  }

 private:
  bool scale_shift_norm_;
  Resample resample_;
  torch::nn::GroupNorm in_norm_{nullptr}, out_norm_{nullptr};
  torch::nn::Conv2d in_conv_{nullptr}, out_conv_{nullptr}, skip_{nullptr};
  torch::nn::Linear emb_linear_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

// Self-attention over the spatial positions, with a residual connection.
class UNetAttentionBlockImpl : public torch::nn::Module {
 public:
  UNetAttentionBlockImpl(int64_t channels, int64_t heads, bool new_order, int64_t groups)
      : heads_(heads), new_order_(new_order) {
    norm_ = register_module("norm", make_group_norm(groups, channels));
    qkv_ = register_module("qkv", torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, 3 * channels, 1)));
    proj_out_ = register_module("proj_out", zeroed(torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, channels, 1))));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1);
    const torch::Tensor flat = x.reshape({b, c, -1});
    const int64_t length = flat.size(2), ch = c / heads_;
    const torch::Tensor qkv = qkv_(apply_norm32(*norm_, flat));
    torch::Tensor q, k, v;
    if (new_order_) {  // [B, (3 * H * ch), T]: q, k, v first, heads inside each
      auto parts = qkv.chunk(3, 1);
      q = parts[0].reshape({b * heads_, ch, length});
      k = parts[1].reshape({b * heads_, ch, length});
      v = parts[2].reshape({b * heads_, ch, length});
    } else {  // legacy [B, (H * 3 * ch), T]: heads first, q, k, v inside each
      auto parts = qkv.reshape({b * heads_, 3 * ch, length}).split(ch, 1);
      q = parts[0];
      k = parts[1];
      v = parts[2];
    }
    // Scaling q and k each by ch^-1/4 (rather than the product by ch^-1/2) is what
    // the reference does; it keeps half-precision logits in range.
    const double scale = 1.0 / std::sqrt(std::sqrt(static_cast<double>(ch)));
    torch::Tensor weight = torch::bmm((q * scale).transpose(1, 2), k * scale);  // [BH, T, S]
    weight = torch::softmax(weight.to(torch::kFloat), -1).to(weight.scalar_type());
    const torch::Tensor attended = torch::bmm(v, weight.transpose(1, 2)).reshape({b, c, length});
    return (flat + proj_out_(attended)).reshape(x.sizes());
  }

 private:
  int64_t heads_;
  bool new_order_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv1d qkv_{nullptr}, proj_out_{nullptr};
};

// Downsampling without a ResBlock: a stride-2 conv named `op`, or average pooling.
class UNetDownsampleImpl : public torch::nn::Module {
 public:
  UNetDownsampleImpl(int64_t channels, bool use_conv) {
    if (use_conv) op_ = register_module("op", conv3x3(channels, channels, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return op_ ? op_(x) : downsample_pool(x); }

 private:
  torch::nn::Conv2d op_{nullptr};
};

// Nearest-neighbour upsampling without a ResBlock, then optionally a conv `conv`.
class UNetUpsampleImpl : public torch::nn::Module {
 public:
  UNetUpsampleImpl(int64_t channels, bool use_conv) {
    if (use_conv) conv_ = register_module("conv", conv3x3(channels, channels));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = upsample2x(x);
    return conv_ ? conv_(out) : out;
  }

 private:
  torch::nn::Conv2d conv_{nullptr};
};

// guided-diffusion's TimestepEmbedSequential: children named 0, 1, ...; those that
// take the embedding get it.
class UNetStageImpl : public torch::nn::Module {
 public:
  template <class Layer>
  void add(std::shared_ptr<Layer> layer) {
    register_module(std::to_string(layers_.size()), layer);
    if constexpr (requires(Layer & m, const torch::Tensor& a) { m.forward(a, a); })
      layers_.emplace_back(
          [layer](const torch::Tensor& x, const torch::Tensor& emb) { return layer->forward(x, emb); });
    else layers_.emplace_back([layer](const torch::Tensor& x, const torch::Tensor&) { return layer->forward(x); });
  }

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb) {
    for (const auto& layer : layers_) x = layer(x, emb);
    return x;
  }

 private:
  std::vector<std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>> layers_;
};

}  // namespace detail

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(UNetOptions options) : options_(std::move(options)) {
    validate_options();
    build();
  }

  // x [B, in_channels, H, W]; t [B] timesteps, any real or integer type (fractional
  // values are fine), fed to a sinusoidal embedding of width base_width with
  // max_period 10000. minimal-diffusion trains on the discrete step index 0..999;
  // diffctl feeds t = 1000 * s for forward time s in [0, 1] (EpsilonScore's
  // time_scale), which keeps that meaning. y [B] int64 labels in [0, num_classes)
  // for a conditional network, an undefined tensor for an unconditional one.
  // Returns the predicted noise eps, shaped [B, out_channels, H, W].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y = {}) {
    torch::Tensor last;
    run_stages(x, t, y, -1, [&](const torch::Tensor& h) { last = h; });
    return out_conv_(torch::silu(detail::apply_norm32(*out_norm_, last)));
  }

  // The output of every stage, in the order the network computes them: the input
  // blocks', the middle block's, then the output blocks' (the last is what the
  // output layer reads), each [B, C, H', W']; only the first `count` of them when
  // count >= 0. What the denoiser learned from unlabelled images: pooled, these
  // are features for a classifier or reward model.
  std::vector<torch::Tensor> stage_outputs(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y = {},
                                           int64_t count = -1) {
    std::vector<torch::Tensor> outputs;
    run_stages(x, t, y, count, [&](const torch::Tensor& h) { outputs.push_back(h); });
    return outputs;
  }

  // Sinusoidal embedding [B, dim] of timesteps [B]: cos of t * f_i then sin, with
  // f_i = max_period^(-i / (dim / 2)); a zero column pads an odd dim.
  static torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0) {
    const int64_t half = dim / 2;
    const auto options = torch::TensorOptions().dtype(torch::kFloat).device(t.device());
    const torch::Tensor freqs =
        torch::exp(-std::log(max_period) * torch::arange(half, options) / static_cast<double>(half));
    const torch::Tensor args = t.to(torch::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
    torch::Tensor embedding = torch::cat({torch::cos(args), torch::sin(args)}, -1);
    if (dim % 2) embedding = torch::cat({embedding, torch::zeros_like(embedding.slice(1, 0, 1))}, -1);
    return embedding;
  }

  // A deep copy (same parameters, buffers, device, dtype and train/eval mode).
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    return deep_copy(*this, options_, device);
  }

  const UNetOptions& options() const { return options_; }
  int64_t levels() const { return static_cast<int64_t>(options_.channel_mult.size()); }

 private:
  // Runs the first `count` stages (all when count < 0), handing each output to
  // `visit`; only the input blocks' outputs are held (the skips), so that a
  // forward pass keeps no more than the network needs.
  template <class Visit>
  void run_stages(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, int64_t count,
                  Visit&& visit) {
    validate_input(x, t, y);
    torch::Tensor emb = time_linear1_(
        torch::silu(time_linear0_(timestep_embedding(t, options_.base_width).to(x.device(), x.scalar_type()))));
    if (options_.num_classes > 0) emb = emb + label_emb_(y.to(x.device()));
    const auto inputs = static_cast<int64_t>(input_blocks_.size());
    const int64_t total = 2 * inputs + 1, wanted = count < 0 ? total : std::min(count, total);
    std::vector<torch::Tensor> skips;
    skips.reserve(input_blocks_.size());
    torch::Tensor h = x;
    for (int64_t i = 0; i < std::min(inputs, wanted); ++i) {
      h = input_blocks_[static_cast<std::size_t>(i)]->forward(h, emb);
      skips.push_back(h);
      visit(h);
    }
    if (wanted <= inputs) return;
    h = middle_block_->forward(h, emb);
    visit(h);
    for (int64_t i = 0; i < wanted - inputs - 1; ++i) {
      h = output_blocks_[static_cast<std::size_t>(i)]->forward(torch::cat({h, skips.back()}, 1), emb);
      skips.pop_back();
      visit(h);
    }
  }

  // The number of attention heads for a block of `channels` channels.
  int64_t heads_for(int64_t channels) const {
    return options_.head_channels > 0 ? channels / options_.head_channels : options_.num_heads;
  }

  bool attention_at(int64_t level) const {
    for (int r : options_.attention_resolutions)
      if (r > 0 && options_.image_size / r == (int64_t{1} << level)) return true;
    return false;
  }

  bool pooled_downsampling() const { return options_.resblock_updown || !options_.conv_resample; }

  // "" when a side of length n survives the levels' down- and upsampling, else why not.
  std::string size_problem(int64_t n) const {
    const bool pooled = pooled_downsampling();
    std::string path = std::to_string(n);
    for (int64_t level = 1; level < levels(); ++level) {
      const int64_t down = detail::downsampled(n, pooled);
      path += " -> " + std::to_string(down);
      if (down < 1 || detail::upsampled(down) != n)
        return diffctl::detail::concat("it does not survive ", levels() - 1, " halvings and doublings (", path,
                                       ", which upsamples back to ", detail::upsampled(down), " != ", n,
                                       "); use a multiple of ", int64_t{1} << (levels() - 1));
      n = down;
    }
    return {};
  }

  void validate_options() const {
    const auto& o = options_;
    require(o.in_channels >= 1 && o.out_channels >= 1, "UNet: in_channels and out_channels must be >= 1, found ",
            o.in_channels, ", ", o.out_channels);
    require(!o.channel_mult.empty(), "UNet: channel_mult must have at least one level");
    require(o.blocks_per_level >= 1, "UNet: blocks_per_level must be >= 1, found ", o.blocks_per_level);
    require(o.num_classes >= 0, "UNet: num_classes must be >= 0, found ", o.num_classes);
    require(o.dropout >= 0.0 && o.dropout < 1.0, "UNet: dropout must be in [0, 1), found ", o.dropout);
    require(o.time_embed_factor >= 1, "UNet: time_embed_factor must be >= 1, found ", o.time_embed_factor);
    require(o.head_channels > 0 || o.num_heads >= 1, "UNet: need head_channels > 0 or num_heads >= 1, found ",
            o.head_channels, " and ", o.num_heads);
    require(o.norm_groups >= 1, "UNet: norm_groups must be >= 1, found ", o.norm_groups);
    for (size_t level = 0; level < o.channel_mult.size(); ++level) {
      const int64_t channels = o.base_width * o.channel_mult[level];
      require(o.channel_mult[level] >= 1 && channels >= 1 && channels % o.norm_groups == 0, "UNet: level ", level,
              " has base_width * channel_mult = ", o.base_width, " * ", o.channel_mult[level], " = ", channels,
              " channels; GroupNorm needs a positive multiple of norm_groups = ", o.norm_groups);
      const int64_t heads = heads_for(channels);
      require(heads >= 1 && channels % heads == 0 && (o.head_channels <= 0 || channels % o.head_channels == 0),
              "UNet: level ", level, " has ", channels, " channels, not divisible into ",
              o.head_channels > 0 ? "heads of head_channels = " : "num_heads = ",
              o.head_channels > 0 ? o.head_channels : o.num_heads);
    }
    require(o.image_size >= 1, "UNet: image_size must be >= 1, found ", o.image_size);
    const std::string problem = size_problem(o.image_size);
    require(problem.empty(), "UNet: image_size ", o.image_size, " does not fit ", levels(), " levels: ", problem);
  }

  void validate_input(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y) const {
    require(x.defined() && x.dim() == 4 && x.size(1) == options_.in_channels, "UNet: x must be [B, ",
            options_.in_channels, ", H, W], found ", x.defined() ? x.sizes() : torch::IntArrayRef{});
    require(x.is_floating_point(), "UNet: x must be floating point, found ", x.scalar_type());
    for (int dim : {2, 3}) {
      const std::string problem = size_problem(x.size(dim));
      require(problem.empty(), "UNet: x's ", dim == 2 ? "height " : "width ", x.size(dim), " does not fit ", levels(),
              " levels: ", problem);
    }
    require(t.defined() && t.dim() == 1 && t.size(0) == x.size(0), "UNet: t must be [", x.size(0),
            "] (one timestep per image), found ", t.defined() ? t.sizes() : torch::IntArrayRef{});
    if (options_.num_classes == 0) {
      require(!y.defined(), "UNet: this network is unconditional (num_classes = 0) but got labels y");
      return;
    }
    require(y.defined(), "UNet: this network is conditional (num_classes = ", options_.num_classes,
            ") and needs labels y [", x.size(0), "]");
    require(y.dim() == 1 && y.size(0) == x.size(0) && y.scalar_type() == torch::kLong, "UNet: labels y must be int64 [",
            x.size(0), "], found ", y.scalar_type(), " ", y.sizes());
    if (y.numel() > 0) {  // one host sync per call on CUDA; cheap beside the network
      const int64_t low = y.min().item<int64_t>(), high = y.max().item<int64_t>();
      require(low >= 0 && high < options_.num_classes, "UNet: labels y must be in [0, ", options_.num_classes,
              "), found values in [", low, ", ", high, "]");
    }
  }

  void build() {
    using detail::Resample;
    const auto& o = options_;
    const int64_t emb_dim = o.base_width * o.time_embed_factor;
    time_linear0_ = torch::nn::Linear(o.base_width, emb_dim);
    time_linear1_ = torch::nn::Linear(emb_dim, emb_dim);
    register_module("time_embed", torch::nn::Sequential(time_linear0_, torch::nn::SiLU(), time_linear1_));
    if (o.num_classes > 0) label_emb_ = register_module("label_emb", torch::nn::Embedding(o.num_classes, emb_dim));

    auto res_block = [&](int64_t in, int64_t out, Resample resample) {
      return std::make_shared<detail::UNetResBlockImpl>(in, emb_dim, o.dropout, out, o.scale_shift_norm, resample,
                                                        o.norm_groups);
    };
    auto attention = [&](int64_t channels) {
      return std::make_shared<detail::UNetAttentionBlockImpl>(channels, heads_for(channels), o.new_attention_order,
                                                              o.norm_groups);
    };
    auto input_list = register_module("input_blocks", torch::nn::ModuleList());
    auto add_input = [&](std::shared_ptr<detail::UNetStageImpl> stage) {
      input_list->push_back(stage);
      input_blocks_.push_back(std::move(stage));
    };

    int64_t ch = o.base_width * o.channel_mult[0];
    const int64_t first_ch = ch;
    std::vector<int64_t> skip_channels{ch};
    {
      auto stage = std::make_shared<detail::UNetStageImpl>();
      stage->add(detail::conv3x3(o.in_channels, ch).ptr());
      add_input(stage);
    }
    for (int64_t level = 0; level < levels(); ++level) {
      const int64_t level_ch = o.base_width * o.channel_mult[level];
      for (int64_t i = 0; i < o.blocks_per_level; ++i) {
        auto stage = std::make_shared<detail::UNetStageImpl>();
        stage->add(res_block(ch, level_ch, Resample::kNone));
        ch = level_ch;
        if (attention_at(level)) stage->add(attention(ch));
        add_input(stage);
        skip_channels.push_back(ch);
      }
      if (level + 1 < levels()) {
        auto stage = std::make_shared<detail::UNetStageImpl>();
        if (o.resblock_updown) stage->add(res_block(ch, ch, Resample::kDown));
        else stage->add(std::make_shared<detail::UNetDownsampleImpl>(ch, o.conv_resample));
        add_input(stage);
        skip_channels.push_back(ch);
      }
    }

    middle_block_ = register_module("middle_block", std::make_shared<detail::UNetStageImpl>());
    middle_block_->add(res_block(ch, ch, Resample::kNone));
    middle_block_->add(attention(ch));
    middle_block_->add(res_block(ch, ch, Resample::kNone));

    auto output_list = register_module("output_blocks", torch::nn::ModuleList());
    for (int64_t level = levels() - 1; level >= 0; --level) {
      const int64_t level_ch = o.base_width * o.channel_mult[level];
      for (int64_t i = 0; i <= o.blocks_per_level; ++i) {
        auto stage = std::make_shared<detail::UNetStageImpl>();
        stage->add(res_block(ch + skip_channels.back(), level_ch, Resample::kNone));
        skip_channels.pop_back();
        ch = level_ch;
        if (attention_at(level)) stage->add(attention(ch));
        if (level > 0 && i == o.blocks_per_level) {
          if (o.resblock_updown) stage->add(res_block(ch, ch, Resample::kUp));
          else stage->add(std::make_shared<detail::UNetUpsampleImpl>(ch, o.conv_resample));
        }
        output_list->push_back(stage);
        output_blocks_.push_back(std::move(stage));
      }
    }

    out_norm_ = detail::make_group_norm(o.norm_groups, ch);
    out_conv_ = detail::zeroed(detail::conv3x3(first_ch, o.out_channels));
    register_module("out", torch::nn::Sequential(out_norm_, torch::nn::SiLU(), out_conv_));
  }

  UNetOptions options_;
  torch::nn::Linear time_linear0_{nullptr}, time_linear1_{nullptr};
  torch::nn::Embedding label_emb_{nullptr};
  std::vector<std::shared_ptr<detail::UNetStageImpl>> input_blocks_, output_blocks_;
  std::shared_ptr<detail::UNetStageImpl> middle_block_;
  torch::nn::GroupNorm out_norm_{nullptr};
  torch::nn::Conv2d out_conv_{nullptr};
};
TORCH_MODULE(UNet);

}  // namespace diffctl::models
