// PyTorch bindings of mgcnn's CPU kernels: conv3x3.cpp, depthwise_s2.cpp, batchnorm.cpp, pair_transfer.cpp (NHWC
// tensors in and out).
#include <torch/extension.h>

#include "batchnorm.h"
#include "conv3x3.h"
#include "depthwise_s2.h"
#include "pair_transfer.h"
#include "tensor_checks.h"

namespace {

using mgcnn_kernels::check_nhwc;

void check_weight(const torch::Tensor& w, const torch::Tensor& x) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3, "weight must be (C, C/groups, 3, 3)");
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), "weight and input must have the same dtype");
  TORCH_CHECK(w.device().is_cpu(), "weight must be a CPU tensor");
  const int64_t C = x.size(3), cg = w.size(1);
  TORCH_CHECK(w.size(0) == C && cg >= 1 && C % cg == 0, "weight (", w.size(0), ", ", cg, ", 3, 3) does not fit ", C,
              " channels with as many outputs as inputs per group");
}

// y = add + conv(x, w) (add undefined: conv(x, w)) with w (C, cg, 3, 3) already in this convolution's orientation.
torch::Tensor run_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& add = torch::Tensor()) {
  auto y = torch::empty_like(x);
  if (x.numel() == 0) return y;
  const int64_t N = x.size(0);
  const int H = static_cast<int>(x.size(1)), W = static_cast<int>(x.size(2)), C = static_cast<int>(x.size(3));
  const int cg = static_cast<int>(w.size(1));
  const bool a = add.defined();
  if (x.scalar_type() == at::kFloat)
    mgcnn_kernels::conv_f32(x.data_ptr<float>(), w.data_ptr<float>(), a ? add.data_ptr<float>() : nullptr,
                            y.data_ptr<float>(), N, H, W, C, cg);
  else
    mgcnn_kernels::conv_f64(x.data_ptr<double>(), w.data_ptr<double>(), a ? add.data_ptr<double>() : nullptr,
                            y.data_ptr<double>(), N, H, W, C, cg);
  return y;
}

// y = conv(x, w) (+ add): x and add (N, H, W, C) contiguous, w (C, C/groups, 3, 3).
torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& w, const c10::optional<torch::Tensor>& add) {
  check_nhwc(x, "x");
  check_weight(w, x);
  const bool has_add = add.has_value() && add->defined();
  if (has_add) {
    check_nhwc(*add, "add");
    TORCH_CHECK(add->sizes() == x.sizes() && add->scalar_type() == x.scalar_type(), "add must match x");
  }
  return run_conv(x, w.contiguous(), has_add ? *add : torch::Tensor());
}

// dx for the output gradient dy (N, H, W, C): the convolution with the flipped, group-transposed weight.
torch::Tensor input_grad(const torch::Tensor& dy, const torch::Tensor& w) {
  check_nhwc(dy, "grad_output");
  check_weight(w, dy);
  const int64_t C = dy.size(3), cg = w.size(1);
  auto wt = w.reshape({C / cg, cg, cg, 3, 3}).transpose(1, 2).flip({3, 4}).reshape({C, cg, 3, 3}).contiguous();
  return run_conv(dy, wt);
}

// dW (C, cg, 3, 3) for input x and output gradient dy, both (N, H, W, C).
torch::Tensor weight_grad(const torch::Tensor& x, const torch::Tensor& dy, int64_t cg) {
  check_nhwc(x, "x");
  check_nhwc(dy, "grad_output");
  TORCH_CHECK(x.sizes() == dy.sizes() && x.scalar_type() == dy.scalar_type(), "x and grad_output must match");
  const int64_t N = x.size(0), C = x.size(3);
  TORCH_CHECK(cg >= 1 && C % cg == 0, "channels per group must divide the channels");
  auto dw = torch::zeros({C, cg, 3, 3}, x.options());
  if (x.numel() == 0) return dw;
  const int H = static_cast<int>(x.size(1)), W = static_cast<int>(x.size(2));
  if (x.scalar_type() == at::kFloat)
    mgcnn_kernels::wgrad_f32(x.data_ptr<float>(), dy.data_ptr<float>(), dw.data_ptr<float>(), N, H, W,
                             static_cast<int>(C), static_cast<int>(cg));
  else
    mgcnn_kernels::wgrad_f64(x.data_ptr<double>(), dy.data_ptr<double>(), dw.data_ptr<double>(), N, H, W,
                             static_cast<int>(C), static_cast<int>(cg));
  return dw;
}

// ---- training-mode BatchNorm + ReLU (+ residual) of batchnorm.cpp: x (N, H, W, C) contiguous, per-channel vectors
void check_channel_vector(const torch::Tensor& t, const torch::Tensor& x, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(3) && t.is_contiguous() && t.device().is_cpu() &&
                  t.scalar_type() == x.scalar_type(), name, " must be a contiguous (C,) tensor of the input's dtype");
}

// (y, mean, invstd); running_mean / running_var (undefined: none) are updated in place.
std::vector<torch::Tensor> bn_relu_forward(const torch::Tensor& x, const torch::Tensor& weight,
                                           const torch::Tensor& bias, const c10::optional<torch::Tensor>& residual,
                                           const c10::optional<torch::Tensor>& running_mean,
                                           const c10::optional<torch::Tensor>& running_var, double momentum,
                                           double eps) {
  check_nhwc(x, "x");
  check_channel_vector(weight, x, "weight");
  check_channel_vector(bias, x, "bias");
  const int64_t C = x.size(3), M = x.numel() / std::max<int64_t>(C, 1);
  TORCH_CHECK(M > 1, "batch norm in training needs more than one value per channel");
  const bool has_res = residual.has_value() && residual->defined();
  if (has_res) {
    check_nhwc(*residual, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->scalar_type() == x.scalar_type(), "residual must match x");
  }
  torch::Tensor rm = running_mean.value_or(torch::Tensor()), rv = running_var.value_or(torch::Tensor());
  if (rm.defined()) check_channel_vector(rm, x, "running_mean");
  if (rv.defined()) check_channel_vector(rv, x, "running_var");
  auto y = torch::empty_like(x), mean = torch::empty({C}, x.options()), invstd = torch::empty({C}, x.options());
  const int c = static_cast<int>(C);
  if (x.scalar_type() == at::kFloat)
    mgcnn_kernels::bn_relu_fwd_f32(x.data_ptr<float>(), has_res ? residual->data_ptr<float>() : nullptr,
                                   weight.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(),
                                   mean.data_ptr<float>(), invstd.data_ptr<float>(),
                                   rm.defined() ? rm.data_ptr<float>() : nullptr,
                                   rv.defined() ? rv.data_ptr<float>() : nullptr, M, c, momentum, eps);
  else
    mgcnn_kernels::bn_relu_fwd_f64(x.data_ptr<double>(), has_res ? residual->data_ptr<double>() : nullptr,
                                   weight.data_ptr<double>(), bias.data_ptr<double>(), y.data_ptr<double>(),
                                   mean.data_ptr<double>(), invstd.data_ptr<double>(),
                                   rm.defined() ? rm.data_ptr<double>() : nullptr,
                                   rv.defined() ? rv.data_ptr<double>() : nullptr, M, c, momentum, eps);
  return {y, mean, invstd};
}

// (dx or an undefined tensor, dweight, dbias) for the output gradient g (N, H, W, C).
std::vector<torch::Tensor> bn_relu_backward(const torch::Tensor& x, const torch::Tensor& g,
                                            const torch::Tensor& weight, const torch::Tensor& bias,
                                            const torch::Tensor& mean, const torch::Tensor& invstd,
                                            bool input_grad) {
  check_nhwc(x, "x");
  check_nhwc(g, "grad_output");
  TORCH_CHECK(g.sizes() == x.sizes() && g.scalar_type() == x.scalar_type(), "x and grad_output must match");
  for (auto* t : {&weight, &bias, &mean, &invstd}) check_channel_vector(*t, x, "a per-channel tensor");
  const int64_t C = x.size(3), M = x.numel() / std::max<int64_t>(C, 1);
  auto dx = input_grad ? torch::empty_like(x) : torch::Tensor();
  auto dw = torch::empty({C}, x.options()), db = torch::empty({C}, x.options());
  const int c = static_cast<int>(C);
  if (x.scalar_type() == at::kFloat)
    mgcnn_kernels::bn_relu_bwd_f32(x.data_ptr<float>(), g.data_ptr<float>(), weight.data_ptr<float>(),
                                   bias.data_ptr<float>(), mean.data_ptr<float>(), invstd.data_ptr<float>(),
                                   input_grad ? dx.data_ptr<float>() : nullptr, dw.data_ptr<float>(),
                                   db.data_ptr<float>(), M, c);
  else
    mgcnn_kernels::bn_relu_bwd_f64(x.data_ptr<double>(), g.data_ptr<double>(), weight.data_ptr<double>(),
                                   bias.data_ptr<double>(), mean.data_ptr<double>(), invstd.data_ptr<double>(),
                                   input_grad ? dx.data_ptr<double>() : nullptr, dw.data_ptr<double>(),
                                   db.data_ptr<double>(), M, c);
  return {dx, dw, db};
}

// ---- in-channel pair transfers of pair_transfer.cpp: wide (N, H, W, C) and narrow (N, H, W, C/2) NHWC tensors
void check_pair(const torch::Tensor& wide, const torch::Tensor& narrow, const torch::Tensor& w) {
  check_nhwc(wide, "the C-channel tensor");
  check_nhwc(narrow, "the C/2-channel tensor");
  const int64_t C = wide.size(3);
  TORCH_CHECK(C % 2 == 0 && narrow.size(3) * 2 == C && narrow.size(0) == wide.size(0) &&
                  narrow.size(1) == wide.size(1) && narrow.size(2) == wide.size(2),
              "pair transfers map C channels to C/2 at the same pixels");
  TORCH_CHECK(narrow.scalar_type() == wide.scalar_type() && w.scalar_type() == wide.scalar_type(),
              "pair transfer tensors must have one dtype");
  TORCH_CHECK(w.is_contiguous() && w.numel() == C && w.device().is_cpu(), "pair weight must hold C contiguous values");
}

torch::Tensor narrow_like(const torch::Tensor& wide) {
  return torch::empty({wide.size(0), wide.size(1), wide.size(2), wide.size(3) / 2}, wide.options());
}

// y (N, H, W, C/2) = the restriction of x (N, H, W, C) by w (C values)
torch::Tensor pair_restrict(const torch::Tensor& x, const torch::Tensor& w) {
  auto y = narrow_like(x);
  check_pair(x, y, w);
  const int C = static_cast<int>(x.size(3));
  const int64_t M = x.numel() / std::max(C, 1);
  if (x.scalar_type() == at::kFloat)
    mgcnn_kernels::pair_restrict(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(), M, C);
  else
    mgcnn_kernels::pair_restrict(x.data_ptr<double>(), w.data_ptr<double>(), y.data_ptr<double>(), M, C);
  return y;
}

// y (N, H, W, C) = add + the prolongation of u (N, H, W, C/2) by w (C values); add may be None
torch::Tensor pair_prolong(const torch::Tensor& u, const torch::Tensor& w, const c10::optional<torch::Tensor>& add) {
  auto y = torch::empty({u.size(0), u.size(1), u.size(2), u.size(3) * 2}, u.options());
  check_pair(y, u, w);
  const bool a = add.has_value() && add->defined();
  if (a) {
    check_nhwc(*add, "add");
    TORCH_CHECK(add->sizes() == y.sizes() && add->scalar_type() == y.scalar_type(), "add must match the output");
  }
  const int C = static_cast<int>(y.size(3));
  const int64_t M = y.numel() / std::max(C, 1);
  if (u.scalar_type() == at::kFloat)
    mgcnn_kernels::pair_prolong(u.data_ptr<float>(), w.data_ptr<float>(), a ? add->data_ptr<float>() : nullptr,
                                y.data_ptr<float>(), M, C);
  else
    mgcnn_kernels::pair_prolong(u.data_ptr<double>(), w.data_ptr<double>(), a ? add->data_ptr<double>() : nullptr,
                                y.data_ptr<double>(), M, C);
  return y;
}

// (gx or an undefined tensor, gw (C)) for the restriction's output gradient g (N, H, W, C/2) and input x
std::vector<torch::Tensor> pair_restrict_backward(const torch::Tensor& g, const torch::Tensor& x,
                                                  const torch::Tensor& w, bool input_grad) {
  check_pair(x, g, w);
  auto gx = input_grad ? torch::empty_like(x) : torch::Tensor();
  auto gw = torch::empty({x.size(3)}, x.options());
  const int C = static_cast<int>(x.size(3));
  const int64_t M = x.numel() / std::max(C, 1);
  if (x.scalar_type() == at::kFloat)
    mgcnn_kernels::pair_restrict_bwd(g.data_ptr<float>(), x.data_ptr<float>(), w.data_ptr<float>(),
                                     input_grad ? gx.data_ptr<float>() : nullptr, gw.data_ptr<float>(), M, C);
  else
    mgcnn_kernels::pair_restrict_bwd(g.data_ptr<double>(), x.data_ptr<double>(), w.data_ptr<double>(),
                                     input_grad ? gx.data_ptr<double>() : nullptr, gw.data_ptr<double>(), M, C);
  return {gx, gw};
}

// (gu or an undefined tensor, gw (C)) for the prolongation's output gradient g (N, H, W, C) and input u
std::vector<torch::Tensor> pair_prolong_backward(const torch::Tensor& g, const torch::Tensor& u,
                                                 const torch::Tensor& w, bool input_grad) {
  check_pair(g, u, w);
  auto gu = input_grad ? torch::empty_like(u) : torch::Tensor();
  auto gw = torch::empty({g.size(3)}, g.options());
  const int C = static_cast<int>(g.size(3));
  const int64_t M = g.numel() / std::max(C, 1);
  if (g.scalar_type() == at::kFloat)
    mgcnn_kernels::pair_prolong_bwd(g.data_ptr<float>(), u.data_ptr<float>(), w.data_ptr<float>(),
                                    input_grad ? gu.data_ptr<float>() : nullptr, gw.data_ptr<float>(), M, C);
  else
    mgcnn_kernels::pair_prolong_bwd(g.data_ptr<double>(), u.data_ptr<double>(), w.data_ptr<double>(),
                                    input_grad ? gu.data_ptr<double>() : nullptr, gw.data_ptr<double>(), M, C);
  return {gu, gw};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Grouped 3x3 stride-1 convolutions with few channels per group on NHWC CPU tensors (mgcnn)";
  m.attr("isa") = mgcnn_kernels::isa();
  m.attr("vector_lanes") = mgcnn_kernels::vector_lanes();
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("forward", &forward, "y = conv(x, w) (+ add), NHWC", py::arg("x"), py::arg("weight"),
        py::arg("add") = py::none(), nogil);
  m.def("input_grad", &input_grad, "dx from dy, NHWC", py::arg("grad_output"), py::arg("weight"), nogil);
  m.def("weight_grad", &weight_grad, "dW from x and dy, NHWC", py::arg("x"), py::arg("grad_output"),
        py::arg("channels_per_group"), nogil);
  // depthwise 3x3 stride-2 transfers (depthwise_s2.cpp): x (N, H, W, C), y (N, ceil(H/2), ceil(W/2), C M)
  m.def("dws2_forward", &mgcnn_kernels::dws2_forward, "y = depthwise stride-2 conv(x, w), NHWC", py::arg("x"),
        py::arg("weight"), nogil);
  m.def("dws2_input_grad", &mgcnn_kernels::dws2_input_grad, "dx from dy, NHWC", py::arg("grad_output"),
        py::arg("weight"), py::arg("height"), py::arg("width"), py::arg("channels"), nogil);
  m.def("dws2_weight_grad", &mgcnn_kernels::dws2_weight_grad, "dW from x and dy, NHWC", py::arg("x"),
        py::arg("grad_output"), nogil);
  m.def("bn_relu_forward", &bn_relu_forward, "training BatchNorm + ReLU (+ residual), NHWC: (y, mean, invstd)",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("residual"), py::arg("running_mean"),
        py::arg("running_var"), py::arg("momentum"), py::arg("eps"), nogil);
  m.def("bn_relu_backward", &bn_relu_backward, "its backward: (dx, dweight, dbias)", py::arg("x"),
        py::arg("grad_output"), py::arg("weight"), py::arg("bias"), py::arg("mean"), py::arg("invstd"),
        py::arg("input_grad"), nogil);
  m.def("pair_restrict", &pair_restrict, "in-channel pair restriction C -> C/2, NHWC", py::arg("x"),
        py::arg("weight"), nogil);
  m.def("pair_prolong", &pair_prolong, "in-channel pair prolongation C/2 -> C (+ add), NHWC", py::arg("u"),
        py::arg("weight"), py::arg("add") = py::none(), nogil);
  m.def("pair_restrict_backward", &pair_restrict_backward, "its backward: (gx, gw)", py::arg("grad_output"),
        py::arg("x"), py::arg("weight"), py::arg("input_grad"), nogil);
  m.def("pair_prolong_backward", &pair_prolong_backward, "its backward: (gu, gw)", py::arg("grad_output"),
        py::arg("u"), py::arg("weight"), py::arg("input_grad"), nogil);
}
