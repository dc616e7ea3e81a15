// Control policies (policy/control.hpp).

#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "diffctl/policy/control.hpp"

using namespace diffctl;

TEST_CASE("the image control starts at zero, its per-class image gets a gradient at once and depends on z and t",
          "[policy]") {
  torch::manual_seed(5);
  policy::NetworkControl control(policy::ImageControlNet(policy::ImageControlNetOptions{
      .channels = 1, .classes = 3, .width = 8, .image_size = 6, .class_image_scale = 2.0}));
  const torch::Tensor x = torch::randn({4, 1, 6, 6});
  const torch::Tensor z = torch::tensor({0, 1, 2, 1});
  const torch::Tensor u = control.control(0.5, x, z);
  REQUIRE(u.sizes() == x.sizes());
  CHECK(u.abs().max().item<double>() == 0.0);
  // The reward's gradient w.r.t. u reaches the class image of each prompted class only.
  const torch::Tensor direction = torch::randn_like(x);
  (u * direction).sum().backward();
  const auto named = control.network()->named_parameters();
  const torch::Tensor grad = named["class_image.weight"].grad();
  REQUIRE(grad.defined());
  // Row z holds [A_z, B_z]; d<u, w>/dA_z = scale * sum of w over that class's samples, dB_z = t times it.
  const torch::Tensor a = grad.narrow(1, 0, 36).view({3, 1, 6, 6}), b = grad.narrow(1, 36, 36).view({3, 1, 6, 6});
  const torch::Tensor expect_a1 = 2.0 * (direction[1] + direction[3]);
  CHECK(torch::allclose(a[1], expect_a1, 1e-5, 1e-6));
  CHECK(torch::allclose(a[0], 2.0 * direction[0], 1e-5, 1e-6));
  CHECK(torch::allclose(b[1], 0.5 * expect_a1, 1e-5, 1e-6));
  // A step on the class images gives a control that differs by class and by time.
  {
    torch::NoGradGuard no_grad;
    named["class_image.weight"].add_(grad);
  }
  const torch::Tensor early = control.control(0.1, x, z).detach(), late = control.control(0.9, x, z).detach();
  CHECK((early[1] - early[0]).abs().max().item<double>() > 0.1);
  CHECK((late[1] - early[1]).abs().max().item<double>() > 0.1);
  CHECK(torch::allclose(early[1], early[3]));  // same class, no state dependence yet (the convolutions start at zero)
}
