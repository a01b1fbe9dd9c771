"""Paths of the torch adapters: each a few lines over the eager adapter."""
import torch


def channels_last(base):
    class ChannelsLast(base):
        def build(self, momentum, eps):
            super().build(momentum, eps)
            if self.ndim == 4:
                self.module = self.module.to(memory_format=torch.channels_last)

        def _t(self, a, requires_grad=False):
            t = super()._t(a)
            if t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            return t.detach().requires_grad_(requires_grad)
    return ChannelsLast
