r"""``compare.png``: what each objective learnt, next to the held-out data.

* 2-D data: per objective, model draws over the held-out data (top) and the model density
  :math:`p(x)` by importance sampling on a grid (bottom).
* Images: a first column with a panel of held-out images; per objective, the decoded means
  :math:`g(z)` of prior draws :math:`z \sim p(z)` (top; the Gaussian observation noise is left
  out, as is usual for image VAEs) and held-out images next to their reconstructions
  (bottom; pairs *original | reconstruction*, decoded from the posterior mean). Tiles are
  separated by gutters and share one grey scale (that of the held-out data); titles give the
  objective and its held-out NLL.

The data of a panel are computed where the objective was trained (:func:`figure_data`, in the
worker process); :func:`compare_figure` only draws.
"""

import math

import torch

from .evaluate import log_likelihood, posterior_means

__all__ = ["build_figure", "compare_figure", "figure_data", "pair_images", "tile_images"]

#: decoded prior draws and reconstructed held-out images per objective
NUM_MEANS, NUM_RECON, GRID = 32, 16, 60


def tile_images(images, cols, gutter=1):
    r"""A mosaic of images with ``gutter`` pixels of NaN between tiles (drawn in the colormap's
    "bad" colour).

    :param images: ``(n, C, H, W)`` or ``(n, H, W)`` tensor.
    :param int cols: tiles per row.
    :param int gutter: pixels between tiles.
    :returns: ``(rows·(H+g)-g, cols·(W+g)-g)`` array for one channel, else with a trailing RGB
        axis.
    """
    images = images.detach().float().cpu()
    if images.dim() == 4:
        images = images.permute(0, 2, 3, 1)  # (n, H, W, C)
        if images.shape[-1] == 1:
            images = images[..., 0]
    n, h, w = images.shape[:3]
    rows = max(1, math.ceil(n / cols))
    shape = (rows * (h + gutter) - gutter, cols * (w + gutter) - gutter) + images.shape[3:]
    grid = torch.full(shape, float("nan"))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + gutter) : r * (h + gutter) + h, c * (w + gutter) : c * (w + gutter) + w] = img
    return grid.numpy()


@torch.no_grad()
def figure_data(built, x_test, nll, image_shape):
    r"""The tensors of one objective's panels (computed inside its evaluation mode).

    :param Built built: the trained objective.
    :param x_test: held-out points.
    :param float nll: its held-out NLL (for the title).
    :param image_shape: ``(C, H, W)`` for image data, else ``None``.
    """
    out = {"nll": nll}
    dim = math.prod(x_test.shape[1:])
    with built.evaluation_mode():
        if image_shape is not None:
            out["means"] = built.sample(NUM_MEANS)[0].cpu()
            originals = x_test[:NUM_RECON]
            z = posterior_means(built.guide, originals)
            out["recon"] = built.decode(z).cpu()
        elif dim == 2:
            out["samples"] = built.sample(min(1000, max(x_test.shape[0], 16)))[1].cpu()
            lo, hi = x_test.min(0).values - 0.5, x_test.max(0).values + 0.5
            xs = torch.linspace(float(lo[0]), float(hi[0]), GRID)
            ys = torch.linspace(float(lo[1]), float(hi[1]), GRID)
            gx, gy = torch.meshgrid(xs, ys, indexing="xy")
            grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1).to(x_test)
            shift = float(built.log_z()[0]) if built.log_z is not None else 0.0
            logp = log_likelihood(built, grid, 100, shift)
            out["density"] = (gx, gy, logp.exp().reshape(GRID, GRID).cpu())
        else:
            return None
    return out


def _images(x, image_shape):
    return x.reshape((x.shape[0],) + tuple(image_shape))


def pair_images(originals, reconstructions):
    r"""Side-by-side pairs *original | reconstruction* (one NaN column between), as images.

    :param originals: ``(n, C, H, W)``.
    :param reconstructions: ``(n, C, H, W)``.
    """
    a, b = originals.detach().float().cpu(), reconstructions.detach().float().cpu()
    gap = torch.full(a.shape[:-1] + (1,), float("nan"))
    return torch.cat([a, gap, b], -1)


def _title(name, panel):
    nll = panel.get("nll") if panel else None
    return f"{name}\nNLL {nll:.2f}" if nll is not None else f"{name}\n(no NLL)"


def build_figure(entries, x_test, image_shape):
    r"""The comparison figure (a matplotlib ``Figure``), or ``None`` for data that are neither
    2-D nor images.

    :param entries: ``(objective name, panel data or None)`` per objective (``None``: diverged
        or failed; drawn as an empty panel).
    :param x_test: held-out points.
    :param image_shape: ``(C, H, W)`` for image data, else ``None``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dim = math.prod(x_test.shape[1:])
    if image_shape is None and dim != 2:
        return None
    cols = len(entries) + (1 if image_shape is not None else 0)
    height = 4.2 if image_shape is not None else 5.6
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols + 0.4, height), squeeze=False)
    if image_shape is not None:
        _draw_images(fig, axes, entries, x_test, image_shape, plt)
    else:
        _draw_2d(axes, entries, x_test)
    fig.tight_layout()
    return fig


def _draw_images(fig, axes, entries, x_test, image_shape, plt):
    cmap = plt.get_cmap("gray").with_extremes(bad="#9ecae1")  # the gutters
    data = _images(x_test, image_shape).detach().float().cpu()
    scale = dict(vmin=float(data.min()), vmax=float(data.max()), cmap=cmap)
    rgb = image_shape[0] == 3

    def show(ax, tiles):
        if rgb:
            lo, hi = scale["vmin"], scale["vmax"]
            tiles = (tiles - lo) / max(hi - lo, 1e-12)
            tiles[tiles != tiles] = 1.0  # white gutters
            ax.imshow(tiles.clip(0, 1), interpolation="nearest")
        else:
            ax.imshow(tiles, interpolation="nearest", **scale)
        ax.set_xticks([])
        ax.set_yticks([])

    show(axes[0][0], tile_images(data[:NUM_MEANS], 8))
    axes[0][0].set_title("held-out data", fontsize=9)
    axes[1][0].axis("off")
    axes[1][0].text(
        0.5,
        0.5,
        "top: decoded means g(z)\nof prior draws z ~ p(z)\n\nbottom: pairs\n"
        "original | reconstruction\n(held-out images)",
        ha="center",
        va="center",
        fontsize=8,
        transform=axes[1][0].transAxes,
    )
    for col, (name, panel) in enumerate(entries, start=1):
        top, bottom = axes[0][col], axes[1][col]
        top.set_title(_title(name, panel), fontsize=9)
        if panel is None:
            for ax in (top, bottom):
                ax.axis("off")
            continue
        show(top, tile_images(_images(panel["means"], image_shape), 8))
        pairs = pair_images(data[: panel["recon"].shape[0]], _images(panel["recon"], image_shape))
        show(bottom, tile_images(pairs, 4, gutter=3))


def _draw_2d(axes, entries, x_test):
    data = x_test.detach().float().cpu()
    lo, hi = data.min(0).values - 0.5, data.max(0).values + 0.5
    for col, (name, panel) in enumerate(entries):
        top, bottom = axes[0][col], axes[1][col]
        top.set_title(_title(name, panel), fontsize=9)
        bottom.set_title(f"{name}: p(x)", fontsize=9)
        top.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="held-out data")
        if panel is not None:
            s = panel["samples"].float()
            top.scatter(s[:, 0], s[:, 1], s=2, c="C0", label="model samples")
            gx, gy, density = panel["density"]
            bottom.contourf(gx, gy, density, levels=20)
        for ax in (top, bottom):
            ax.set_xlim(float(lo[0]), float(hi[0]))
            ax.set_ylim(float(lo[1]), float(hi[1]))
    axes[0][0].legend(fontsize=7, loc="upper left", markerscale=4)


def compare_figure(entries, x_test, image_shape, path, dpi=100):
    r"""Draws :func:`build_figure` into ``path``; returns ``path``, or ``None`` if there is no
    figure for this kind of data.

    :param entries: see :func:`build_figure`.
    :param x_test: held-out points.
    :param image_shape: ``(C, H, W)`` or ``None``.
    :param str path: the PNG file.
    :param int dpi: resolution.
    """
    fig = build_figure(entries, x_test, image_shape)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
