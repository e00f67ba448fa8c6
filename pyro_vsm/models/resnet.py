r"""Small residual networks for VAEs on square images: the ResNet arm of Wenliang (2022),
Appendix B.2 ("Experiments on ResNet18"), scaled down to 8×8 images (scikit-learn's digits).

The paper uses ResNet18 on 32×32 images (four stages of two basic blocks). Here each of ``k``
resolution levels has one basic block (two 3×3 convolutions and an identity or 1×1 skip): ``k = 2``
for 8×8 images (8 → 4 → 2) and ``k = 3`` for 32×32 (32 → 16 → 8 → 4). No batch normalisation:
the models are evaluated with vectorised particles and per-point scores, which batch statistics
would couple across data points.
"""

from torch import nn
from torch.nn import functional as F

from .._checks import positive_int

__all__ = ["ResNetDecoder", "ResNetEncoder"]


def _levels(image_size):
    r"""``(k, base)``: ``k`` stride-2 stages from ``image_size`` down to ``base``."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    k = 3 if image_size >= 32 else 2
    base = image_size >> k
    if base << k != image_size:
        raise ValueError(f"image_size must be a multiple of {2**k}, got {image_size}")
    return k, base


class BasicBlock(nn.Module):
    r"""A ResNet basic block: ``relu(x' + conv(relu(conv(x))))`` with ``x'`` the input, passed
    through a 1×1 convolution when the channels or the resolution change.

    :param int in_channels: input channels.
    :param int out_channels: output channels.
    :param int stride: 2 halves the resolution, 1 keeps it.
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, stride=stride)
        )

    def forward(self, x):
        r""":param torch.Tensor x: feature maps ``(B, C, H, W)``."""
        return F.relu(self.skip(x) + self.conv2(F.relu(self.conv1(x))))


class ResNetEncoder(nn.Module):
    r"""Residual encoder ``(..., channels, image_size, image_size)`` → ``(..., out_dim)``.

    A 3×3 stem convolution to ``width`` channels, then ``k`` stride-2 basic blocks doubling the
    channels (``2·width``, ``4·width``, ...), then a linear layer from the ``base × base`` map.

    :param int out_dim: output dimension (``2 · latent_dim`` for a diagonal Gaussian guide).
    :param int channels: image channels.
    :param int width: channels of the stem.
    :param int image_size: side of the square image (8, 16, 32, ...).

    References:

    [1] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)

    [2] `Deep Residual Learning for Image Recognition`,
        Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun (2016)
    """

    def __init__(self, out_dim, channels=1, width=16, image_size=8):
        super().__init__()
        out_dim = positive_int(out_dim, "out_dim")
        channels = positive_int(channels, "channels")
        width = positive_int(width, "width")
        k, base = _levels(image_size)
        self.channels, self.image_size = channels, image_size
        blocks, c = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()], width
        for _ in range(k):
            blocks.append(BasicBlock(c, 2 * c, stride=2))
            c *= 2
        self.net = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c * base * base, out_dim))

    def forward(self, x):
        r""":param torch.Tensor x: images with any leading (particle, batch) dimensions."""
        lead = x.shape[:-3]
        out = self.net(x.reshape((-1,) + x.shape[-3:]))
        return out.reshape(lead + out.shape[-1:])


class ResNetDecoder(nn.Module):
    r"""Residual decoder ``(..., latent_dim)`` → ``(..., channels, image_size, image_size)``
    means.

    A linear layer to a ``base × base`` map with ``width · 2^k`` channels, then ``k`` stages of
    nearest-neighbour upsampling (×2) followed by a basic block halving the channels, then a 3×3
    convolution to ``channels``.

    :param int latent_dim: input dimension.
    :param int channels: image channels.
    :param int width: channels of the last hidden map.
    :param int image_size: side of the square image (8, 16, 32, ...).

    References:

    [1] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)

    [2] `Deep Residual Learning for Image Recognition`,
        Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun (2016)
    """

    def __init__(self, latent_dim, channels=1, width=16, image_size=8):
        super().__init__()
        latent_dim = positive_int(latent_dim, "latent_dim")
        channels = positive_int(channels, "channels")
        width = positive_int(width, "width")
        k, base = _levels(image_size)
        self.base, self.top = base, width * 2**k
        self.fc = nn.Linear(latent_dim, self.top * base * base)
        stages, c = [nn.ReLU()], self.top
        for _ in range(k):
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), BasicBlock(c, c // 2)]
            c //= 2
        stages.append(nn.Conv2d(c, channels, 3, padding=1))
        self.net = nn.Sequential(*stages)

    def forward(self, z):
        r""":param torch.Tensor z: latents with any leading (particle, batch) dimensions."""
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, self.top, self.base, self.base)
        out = self.net(h)
        return out.reshape(lead + out.shape[1:])
