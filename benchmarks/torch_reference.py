"""SimpleNet in PyTorch (torch + torchvision's `deform_conv2d`), built from and loaded with a JAX SimpleNet.

    python benchmarks/torch_reference.py --check    # float64 end-to-end agreement, every global_context
    python benchmarks/torch_reference.py --check --global-context lgcr    # one of them (tests/test_torch_twin.py)

Two uses:

* **An end-to-end check of the JAX model.** `from_jax(model)` walks the Flax NNX module tree and builds the
  same network from PyTorch's own layers (``nn.Conv2d``, ``nn.ConvTranspose2d``,
  ``torchvision.ops.deform_conv2d``, ``nn.Conv1d`` + ``nn.PReLU``, ``nn.Conv3d``), copying every weight. In
  float64, with every parameter randomised (including the zero-initialised offset/mask convs and tail),
  both networks must agree to 1e-8 on a random image: a wrong padding, kernel flip, offset layout or
  softmax axis anywhere in the model shows up here.
* **What a user would pick instead**, for `benchmarks/model.py` and `benchmarks/deform_conv.py`.

torch and torchvision are the optional ``torch`` extra (``pip install -e .[torch]``); nothing else in the
project imports them.
"""

from __future__ import annotations

import argparse
import sys

from common import ROOT  # noqa: F401  (puts the repository on sys.path)

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from simplenet_jax.models import blocks
from simplenet_jax.models.config import GLOBAL_CONTEXTS
from simplenet_jax.models.config import ModelConfig
from simplenet_jax.models import global_context
from simplenet_jax.models import simplenet


def _tensor(value) -> torch.Tensor:
  return torch.from_numpy(np.array(value))


def _conv_weight(kernel) -> torch.Tensor:
  """Flax HWIO → PyTorch OIHW (both cross-correlate, so no flip)."""
  return _tensor(kernel).permute(3, 2, 0, 1).contiguous()


def _conv2d(conv: nnx.Conv) -> nn.Conv2d:
  padding = tuple(p[0] for p in conv.padding)
  assert all(p[0] == p[1] for p in conv.padding), "asymmetric padding has no nn.Conv2d equivalent"
  layer = nn.Conv2d(conv.in_features, conv.out_features, tuple(conv.kernel_size), stride=conv.strides,
                    padding=padding, dilation=conv.kernel_dilation, bias=conv.bias is not None)
  layer.weight.data = _conv_weight(conv.kernel[...])
  if conv.bias is not None:
    layer.bias.data = _tensor(conv.bias[...])
  return layer


def _conv_transpose2d(conv: nnx.ConvTranspose) -> nn.ConvTranspose2d:
  """`blocks.up_conv4x4` is ``ConvTranspose2d(k=4, s=2, p=1)`` with the kernel flipped in space."""
  assert tuple(conv.kernel_size) == (4, 4) and conv.padding == ((2, 2), (2, 2)), conv
  layer = nn.ConvTranspose2d(conv.in_features, conv.out_features, 4, stride=2, padding=1)
  layer.weight.data = _tensor(conv.kernel[...]).flip(0, 1).permute(2, 3, 0, 1).contiguous()  # [Cin,Cout,4,4]
  layer.bias.data = _tensor(conv.bias[...])
  return layer


class ResBlock(nn.Module):

  def __init__(self, block: blocks.ResBlock):
    super().__init__()
    self.conv1, self.conv2, self.conv3 = (_conv2d(c) for c in (block.conv1, block.conv2, block.conv3))

  def forward(self, x):
    return x + self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class DeformConv(nn.Module):
  """DCNv2 with torchvision's kernel: offsets and sigmoid mask from 3×3 convs of the input."""

  def __init__(self, block: blocks.DeformConv):
    super().__init__()
    self.offset_conv = _conv2d(block.offset_conv)
    self.mask_conv = _conv2d(block.mask_conv)
    self.weight = nn.Parameter(_conv_weight(block.kernel[...]))
    self.bias = nn.Parameter(_tensor(block.bias[...]))

  def forward(self, x):
    return tv_deform_conv2d(x, self.offset_conv(x), self.weight, self.bias, padding=(1, 1),
                            mask=torch.sigmoid(self.mask_conv(x)))


class PVB(nn.Module):

  def __init__(self, block: blocks.PVB):
    super().__init__()
    self.dilated1, self.dilated2, self.dilated3 = (_conv2d(c) for c in (block.dilated1, block.dilated2,
                                                                         block.dilated3))
    self.deform = DeformConv(block.deform)
    self.fuse = DeformConv(block.fuse)

  def forward(self, x):
    feat = torch.cat([F.relu(self.dilated1(x)), F.relu(self.dilated2(x)), F.relu(self.dilated3(x)),
                      self.deform(x)], dim=1)
    return x + self.fuse(feat)


class DeformableResBlock(nn.Module):

  def __init__(self, block: blocks.DeformableResBlock):
    super().__init__()
    self.deform = DeformConv(block.deform)
    self.conv = _conv2d(block.conv)

  def forward(self, x):
    return x + self.conv(F.relu(self.deform(x)))


class LGCR(nn.Module):
  """Eqs. 1–5 with PyTorch layers, NCHW: Conv1d(1→r, 3) + PReLU(r) per axis, the rank-r sum, a softmax
  over C·H·W (or C), Conv3d(1→1, 3) on the [N, 1, C, H, W] volume."""

  def __init__(self, block: global_context.LGCR):
    super().__init__()
    self.softmax_axes = block.softmax_axes
    rank = block.kernel_c.shape[1]
    self.conv_c, self.conv_h, self.conv_w = (nn.Conv1d(1, rank, 3, padding=1, bias=False) for _ in range(3))
    self.prelu_c, self.prelu_h, self.prelu_w = (nn.PReLU(rank) for _ in range(3))
    for conv, prelu, kernel, slopes in ((self.conv_c, self.prelu_c, block.kernel_c, block.slopes_c),
                                        (self.conv_h, self.prelu_h, block.kernel_h, block.slopes_h),
                                        (self.conv_w, self.prelu_w, block.kernel_w, block.slopes_w)):
      conv.weight.data = _tensor(kernel[...]).T[:, None, :].contiguous()  # [r, 1, 3]
      prelu.weight.data = _tensor(slopes[...])
    self.conv3d = nn.Conv3d(1, 1, 3, padding=1, bias=False)
    self.conv3d.weight.data = _tensor(block.kernel_3d[...])[None, None]

  def forward(self, x):
    n, c, h, w = x.shape
    fragments = [prelu(conv(v[:, None, :])) for conv, prelu, v in (  # each [N, r, L]
        (self.conv_c, self.prelu_c, x.mean(dim=(2, 3))), (self.conv_h, self.prelu_h, x.mean(dim=(1, 3))),
        (self.conv_w, self.prelu_w, x.mean(dim=(1, 2))))]
    raw = torch.einsum("nrc,nrh,nrw->nchw", *fragments)
    if self.softmax_axes == "chw":
      weight = torch.softmax(raw.reshape(n, -1), dim=-1).reshape(n, c, h, w)
    else:
      weight = torch.softmax(raw, dim=1)
    return self.conv3d(x[:, None])[:, 0] * weight + x


class NonLocal(nn.Module):
  """Wang et al. 2018's embedded-Gaussian block, written as its paper's Fig. 2."""

  def __init__(self, block: global_context.NonLocal):
    super().__init__()

    def pointwise(kernel, bias):
      layer = nn.Conv2d(kernel.shape[0], kernel.shape[1], 1)
      layer.weight.data = _tensor(kernel[...]).T[..., None, None].contiguous()
      layer.bias.data = _tensor(bias[...])
      return layer

    self.theta = pointwise(block.theta_kernel, block.theta_bias)
    self.phi = pointwise(block.phi_kernel, block.phi_bias)
    self.g = pointwise(block.g_kernel, block.g_bias)
    self.out = pointwise(block.out_kernel, block.out_bias)

  def forward(self, x):
    n, c, h, w = x.shape
    theta, phi, g = (f(x).flatten(2) for f in (self.theta, self.phi, self.g))  # [N, D, HW]
    attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [N, HW, HW]
    y = (attention @ g.transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
    return x + self.out(y)


class TensorLowRank(nn.Module):
  """TGM+TRM as Li et al. 2021 compare it: X ⊙ Σ_i λ_i σ(a_ci v_c) ⊗ σ(a_hi v_h) ⊗ σ(a_wi v_w)."""

  def __init__(self, block: global_context.TensorLowRank):
    super().__init__()
    self.scales = nn.ParameterList([nn.Parameter(_tensor(s[...])) for s in (block.scales_c, block.scales_h,
                                                                              block.scales_w)])
    self.rank_weights = nn.Parameter(_tensor(block.rank_weights[...]))

  def forward(self, x):
    vectors = (x.mean(dim=(2, 3)), x.mean(dim=(1, 3)), x.mean(dim=(1, 2)))
    f_c, f_h, f_w = (torch.sigmoid(v[:, :, None] * s) for v, s in zip(vectors, self.scales))  # [N, L, r]
    return x * torch.einsum("ncr,nhr,nwr,r->nchw", f_c, f_h, f_w, self.rank_weights)


class Stage(nn.Module):

  def __init__(self, stage: simplenet.Stage):
    super().__init__()
    self.resblock = from_jax(stage.resblock)
    self.pvb = from_jax(stage.pvb)
    self.dr = None if stage.dr is None else from_jax(stage.dr)

  def forward(self, x):
    x = self.pvb(self.resblock(x))
    return x if self.dr is None else self.dr(x)


class SimpleNet(nn.Module):
  """SimpleNet's forward pass (simplenet.SimpleNet.__call__), NCHW."""

  def __init__(self, model: simplenet.SimpleNet):
    super().__init__()
    for name in ("head", "encoder1", "down1", "encoder2", "down2", "encoder3", "lgcr", "decoder3", "up2",
                 "decoder2", "up1", "decoder1", "tail"):
      setattr(self, name, from_jax(getattr(model, name)))

  def forward(self, image):
    skip1 = self.encoder1(F.relu(self.head(image)))
    skip2 = self.encoder2(F.relu(self.down1(skip1)))
    x = self.encoder3(F.relu(self.down2(skip2)))
    x = self.decoder3(self.lgcr(x))
    x = self.decoder2(F.relu(self.up2(x)) + skip2)
    x = self.decoder1(F.relu(self.up1(x)) + skip1)
    return image + self.tail(x)


_CONVERTERS = {
    nnx.Conv: _conv2d, nnx.ConvTranspose: _conv_transpose2d, blocks.ResBlock: ResBlock,
    blocks.DeformConv: DeformConv, blocks.PVB: PVB, blocks.DeformableResBlock: DeformableResBlock,
    global_context.LGCR: LGCR, global_context.NonLocal: NonLocal, global_context.TensorLowRank: TensorLowRank,
    global_context.Identity: lambda _: nn.Identity(), simplenet.Stage: Stage, simplenet.SimpleNet: SimpleNet,
}


def from_jax(module: nnx.Module) -> nn.Module:
  """The PyTorch twin of a SimpleNet module (or the whole network), holding copies of its weights."""
  converter = _CONVERTERS.get(type(module))
  if converter is None:
    raise TypeError(f"no PyTorch twin for {type(module).__name__}")
  return converter(module)


def randomize(model: nnx.Module, seed: int = 0, offset_scale: float = 0.05) -> None:
  """Replaces every parameter with random numbers, so no layer hides behind a zero initialisation.

  Kernels get fan-in scaled normals (offset convs ``offset_scale`` more, so samples move by a fraction of a
  pixel to a few pixels), biases and 1-D parameters small normals.
  """
  rng = np.random.default_rng(seed)
  for path, param in nnx.iter_graph(model):
    if not isinstance(param, nnx.Param):
      continue
    value = np.asarray(param[...])
    if value.ndim >= 2:
      scale = 1.0 / np.sqrt(np.prod(value.shape[:-1]))
      scale *= 20 * offset_scale if "offset_conv" in path else 1.0
      new = rng.normal(size=value.shape) * scale
    else:
      new = rng.normal(size=value.shape) * 0.1 + (0.25 if "slopes" in str(path[-1]) else 0.0)
    param[...] = jnp.asarray(new, value.dtype)


def check(global_contexts=GLOBAL_CONTEXTS, size=(36, 44), tolerance=1e-8) -> bool:
  """Prints and returns whether JAX and PyTorch agree to ``tolerance`` in float64 for each slot option."""
  jax.config.update("jax_enable_x64", True)
  torch.set_default_dtype(torch.float64)
  ok = True
  image = np.random.default_rng(1).uniform(size=(2, *size, 3))
  for kind in global_contexts:
    model = simplenet.SimpleNet(ModelConfig(global_context=kind), rngs=nnx.Rngs(0))
    randomize(model)
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda a: a.astype(jnp.float64), state))
    want = np.asarray(jax.jit(lambda m, x: m(x))(model, jnp.asarray(image)))
    twin = from_jax(model).double()
    with torch.no_grad():
      got = twin(torch.from_numpy(image).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    difference = float(np.abs(got - want).max())
    change = float(np.abs(want - image).max())
    passed = difference <= tolerance
    ok &= passed
    print(f"global_context={kind:<9} max |JAX − PyTorch| = {difference:.2e} on a {image.shape} image "
          f"(the network changes it by up to {change:.2f}): {'ok' if passed else 'FAILED'}")
  return ok


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true", help="float64 JAX vs PyTorch on a random image")
  parser.add_argument("--tolerance", type=float, default=1e-8)
  parser.add_argument("--global-context", choices=GLOBAL_CONTEXTS, action="append",
                      help="check only this slot option (repeatable); default every one")
  args = parser.parse_args()
  if not args.check:
    parser.print_help()
    return
  options = args.global_context or GLOBAL_CONTEXTS
  sys.exit(0 if check(options, tolerance=args.tolerance) else 1)


if __name__ == "__main__":
  main()
