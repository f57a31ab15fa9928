#include "attention/kdeformer/sampling.h"

#include <ATen/ATen.h>

#include <vector>

#include "attention/random.h"

namespace kdeserve::attention::kdeformer {

at::Tensor power_method_lambda(const at::Tensor& v, const at::Tensor& init, int64_t iterations) {
  TORCH_CHECK(iterations >= 1, "kdeformer: power_iterations must be >= 1, got ", iterations);
  const int64_t groups = v.size(0), keys = v.size(1), dv = v.size(2);
  // Gram of [V, 1] without materialising it: [[VᵀV, Vᵀ1], [1ᵀV, Nk]].
  at::Tensor gram = at::empty({groups, dv + 1, dv + 1}, v.options());  // [G, Dv+1, Dv+1]
  at::Tensor vtv = gram.narrow(1, 0, dv).narrow(2, 0, dv);
  at::bmm_out(vtv, v.transpose(1, 2), v);
  at::Tensor column_sums = v.sum(1);  // [G, Dv]
  gram.narrow(1, 0, dv).select(2, dv).copy_(column_sums);
  gram.select(1, dv).narrow(1, 0, dv).copy_(column_sums);
  gram.select(1, dv).select(1, dv).fill_(static_cast<double>(keys));
  at::Tensor x = init / init.norm(2, {1}, /*keepdim=*/true);
  at::Tensor y_norm;
  for (int64_t it = 0; it < iterations; ++it) {
    at::Tensor y = at::bmm(gram, x.unsqueeze(2)).squeeze(2);  // [G, Dv+1]
    y_norm = y.norm(2, {1}, /*keepdim=*/true);
    x = y / y_norm;
  }
  return y_norm.squeeze(1);
}

at::Tensor power_init(int64_t batch, int64_t heads, int64_t dim, at::ScalarType dtype,
                      at::Device device, const AttentionCall& call) {
  const int64_t groups = batch * heads;
  if (call.injected.power_init) {
    const at::Tensor& p = *call.injected.power_init;
    const bool shared = p.dim() == 1 && p.size(0) == dim;
    const bool per_head =
        p.dim() == 3 && p.size(0) == batch && p.size(1) == heads && p.size(2) == dim;
    TORCH_CHECK(shared || per_head, "kdeformer: injected power_init must be [Dv + 1] = [", dim,
                "] or [B, H, Dv + 1], got ", p.sizes());
    at::Tensor out = p.to(device, dtype);
    return shared ? out.unsqueeze(0).expand({groups, dim}) : out.reshape({groups, dim});
  }
  std::vector<at::Tensor> draws;
  draws.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kPowerInit);
      draws.push_back(at::randn({dim}, gen, at::TensorOptions(at::kDouble)));
    }
  }
  return at::stack(draws).to(device, dtype);
}

at::Tensor sample_probabilities(const at::Tensor& v, Sampling sampling, int64_t power_iterations,
                                const at::Tensor& init) {
  const int64_t groups = v.size(0), keys = v.size(1);
  if (sampling == Sampling::kUniform) {
    return at::full({groups, keys}, 1.0 / static_cast<double>(keys), v.options());
  }
  // Reference calc_A_res: P = ‖v_aug‖ / λ + 1/n, then L1-normalised.
  at::Tensor lambda = power_method_lambda(v, init, power_iterations);  // [G]
  at::Tensor norms = (v.square().sum(2) + 1).sqrt_();                  // [G, Nk]
  at::Tensor p = norms.div_(lambda.unsqueeze(1)).add_(1.0 / static_cast<double>(keys));
  return p.div_(p.sum(1, /*keepdim=*/true));
}

at::Tensor draw_samples(const at::Tensor& probabilities, int64_t batch, int64_t heads,
                        int64_t sample_size, Sampling sampling, const AttentionCall& call) {
  const int64_t groups = batch * heads, keys = probabilities.size(1);
  if (call.injected.sample_indices) {
    const at::Tensor& s = *call.injected.sample_indices;
    const bool shared = s.dim() == 1 && s.size(0) == sample_size;
    const bool per_head =
        s.dim() == 3 && s.size(0) == batch && s.size(1) == heads && s.size(2) == sample_size;
    TORCH_CHECK(shared || per_head, "kdeformer: injected sample_indices must be [m] = [",
                sample_size, "] or [B, H, m], got ", s.sizes());
    at::Tensor idx = s.to(probabilities.device(), at::kLong);
    TORCH_CHECK(idx.numel() == 0 || (idx.min().item<int64_t>() >= 0 &&
                                     idx.max().item<int64_t>() < keys),
                "kdeformer: injected sample_indices must lie in [0, ", keys, ")");
    return shared ? idx.unsqueeze(0).expand({groups, sample_size}).contiguous()
                  : idx.reshape({groups, sample_size});
  }
  // Drawn on the CPU, per (entry, head), so results are the same on every device and for every
  // batch composition.
  at::Tensor p_cpu = probabilities.to(at::kCPU);
  std::vector<at::Tensor> draws;
  draws.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kSamples);
      if (sampling == Sampling::kUniform) {
        draws.push_back(at::randint(keys, {sample_size}, gen, at::TensorOptions(at::kLong)));
      } else {
        draws.push_back(at::multinomial(p_cpu[b * heads + h], sample_size, true, gen));
      }
    }
  }
  return at::stack(draws).to(probabilities.device());
}

ResidualSamples draw_residual_samples(const at::Tensor& v, int64_t batch, int64_t heads,
                                      const KdeformerOptions& opt, const AttentionCall& call) {
  const int64_t m = opt.sample_size(), dv = v.size(2);
  TORCH_CHECK(m >= 1, "kdeformer: draw_residual_samples needs sample_size >= 1, got ", m);
  const at::Tensor init = opt.sampling() == Sampling::kValueNorm
                              ? power_init(batch, heads, dv + 1, v.scalar_type(), v.device(), call)
                              : at::Tensor();
  ResidualSamples out;
  out.probabilities = sample_probabilities(v, opt.sampling(), opt.power_iterations(), init);
  out.indices = draw_samples(out.probabilities, batch, heads, m, opt.sampling(), call).contiguous();
  out.weights = out.probabilities.gather(1, out.indices)
                    .mul_(static_cast<double>(m))
                    .reciprocal_()
                    .contiguous();
  return out;
}

}  // namespace kdeserve::attention::kdeformer
