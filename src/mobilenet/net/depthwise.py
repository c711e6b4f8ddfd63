"""The depthwise convolution of Table 1, with a faster weight gradient on small maps.

oneDNN computes a depthwise filter's gradient with its JIT depthwise kernel, except on maps
under 4×4 (the last layers at ρ = 32 to 64), where it falls back to one small GEMM per
channel. There the gradient is computed as one grouped convolution instead: a step at
α = 0.5, ρ = 32 runs twice as fast (docs/training.md, Speed on a CPU). Everything else, and
any traced, exported or compiled forward, is the plain `nn.Conv2d`, so the layer's weights
and graphs are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL = 4  # below this height or width, oneDNN's depthwise weight gradient is the slow GEMM


def filter_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
    """The gradient of a depthwise conv's (C, 1, kh, kw) filters, for input x (N, C, H, W) and
    the output's gradient (N, C, Ho, Wo): per channel, x correlated with grad_out over the
    batch. The batch becomes the channels one filter sums over and the conv's stride
    becomes the dilation."""
    n, c, h, w = x.shape
    batch_as_channels = x.transpose(0, 1).reshape(1, c * n, h, w)
    out = F.conv2d(batch_as_channels, grad_out.transpose(0, 1), None, 1, padding, stride, c)
    return out[0, :, :kernel[0], :kernel[1]].unsqueeze(1)  # rows past the kernel: a stride that does not divide


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, ctx.stride, ctx.padding,
                                                groups=x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = filter_grad(x, grad_out, weight.shape[2:], ctx.stride, ctx.padding)
        return grad_x, grad_w, None, None


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(c, c, kernel, stride, padding, groups=c, bias=False)`: the same parameters,
    state dict and traced graph. Trained on a CPU on a map under SMALL×SMALL, its filters'
    gradient comes from `filter_grad`."""

    def __init__(self, channels: int, kernel: int, stride: int):
        super().__init__(channels, channels, kernel, stride, padding=(kernel - 1) // 2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and min(x.shape[-2:]) < SMALL
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing()):
            return _DepthwiseConv.apply(x, self.weight, self.stride, self.padding)
        return super().forward(x)
