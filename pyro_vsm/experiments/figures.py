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
worker process); :class:`FigureBuilder` only draws, each panel as soon as it arrives.
"""

import math

import torch

from .evaluate import log_likelihood, posterior_means

__all__ = [
    "FigureBuilder",
    "build_figure",
    "compare_figure",
    "figure_data",
    "pair_images",
    "save_figure",
    "tile_images",
]

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


class FigureBuilder:
    r"""Draws the comparison figure one objective at a time, so that ``compare`` can draw each
    panel as soon as its worker finishes (on a core the workers leave idle) instead of all of
    them at the end. The figure does not depend on the order the panels arrive in.

    :param names: the objectives, in column order.
    :param x_test: held-out points.
    :param image_shape: ``(C, H, W)`` for image data, else ``None``.
    """

    def __init__(self, names, x_test, image_shape):
        self.names, self.x_test, self.image_shape = list(names), x_test, image_shape
        dim = math.prod(x_test.shape[1:])
        self.applies = image_shape is not None or dim == 2
        self.fig = self.axes = self._images = None

    def _start(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = len(self.names) + (1 if self.image_shape is not None else 0)
        height = 4.2 if self.image_shape is not None else 5.6
        self.fig, self.axes = plt.subplots(
            2, cols, figsize=(2.6 * cols + 0.4, height), squeeze=False
        )
        if self.image_shape is not None:
            self._images = _ImagePanels(self.axes, self.x_test, self.image_shape, plt)
        else:
            _held_out_2d(self.axes, self.x_test)

    def add(self, index, panel):
        r"""Draws objective ``index``'s panels.

        :param int index: the objective's column (its position in ``names``).
        :param panel: its :func:`figure_data`, or ``None`` (diverged or failed: an empty panel).
        """
        if not self.applies:
            return
        if self.fig is None:
            self._start()
        name = self.names[index]
        if self._images is not None:
            self._images.draw(index + 1, name, panel)
        else:
            _draw_2d(self.axes, index, name, panel)

    def finish(self):
        r"""The finished ``Figure`` (``None`` for data that are neither 2-D nor images)."""
        if not self.applies:
            return None
        if self.fig is None:
            self._start()
        self.fig.tight_layout()
        return self.fig


def build_figure(entries, x_test, image_shape):
    r"""The comparison figure (a matplotlib ``Figure``), or ``None`` for data that are neither
    2-D nor images.

    :param entries: ``(objective name, panel data or None)`` per objective (``None``: diverged
        or failed; drawn as an empty panel).
    :param x_test: held-out points.
    :param image_shape: ``(C, H, W)`` for image data, else ``None``.
    """
    builder = FigureBuilder([name for name, _ in entries], x_test, image_shape)
    for i, (_, panel) in enumerate(entries):
        builder.add(i, panel)
    return builder.finish()


class _ImagePanels:
    def __init__(self, axes, x_test, image_shape, plt):
        self.axes, self.image_shape = axes, image_shape
        self.cmap = plt.get_cmap("gray").with_extremes(bad="#9ecae1")  # the gutters
        self.data = _images(x_test, image_shape).detach().float().cpu()
        self.scale = dict(vmin=float(self.data.min()), vmax=float(self.data.max()), cmap=self.cmap)
        self.rgb = image_shape[0] == 3
        self.show(axes[0][0], tile_images(self.data[:NUM_MEANS], 8))
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

    def show(self, ax, tiles):
        if self.rgb:
            lo, hi = self.scale["vmin"], self.scale["vmax"]
            tiles = (tiles - lo) / max(hi - lo, 1e-12)
            tiles[tiles != tiles] = 1.0  # white gutters
            ax.imshow(tiles.clip(0, 1), interpolation="nearest")
        else:
            ax.imshow(tiles, interpolation="nearest", **self.scale)
        ax.set_xticks([])
        ax.set_yticks([])

    def draw(self, col, name, panel):
        top, bottom = self.axes[0][col], self.axes[1][col]
        top.set_title(_title(name, panel), fontsize=9)
        if panel is None:
            for ax in (top, bottom):
                ax.axis("off")
            return
        shape = self.image_shape
        self.show(top, tile_images(_images(panel["means"], shape), 8))
        originals = self.data[: panel["recon"].shape[0]]
        pairs = pair_images(originals, _images(panel["recon"], shape))
        self.show(bottom, tile_images(pairs, 4, gutter=3))


def _held_out_2d(axes, x_test):
    # fixing the limits turns autoscaling off: the panels drawn later keep them
    data = x_test.detach().float().cpu()
    lo, hi = data.min(0).values - 0.5, data.max(0).values + 0.5
    for col in range(len(axes[0])):
        axes[0][col].scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="held-out data")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xlim(float(lo[0]), float(hi[0]))
            ax.set_ylim(float(lo[1]), float(hi[1]))


def _draw_2d(axes, col, name, panel):
    top, bottom = axes[0][col], axes[1][col]
    top.set_title(_title(name, panel), fontsize=9)
    bottom.set_title(f"{name}: p(x)", fontsize=9)
    if panel is not None:
        s = panel["samples"].float()
        top.scatter(s[:, 0], s[:, 1], s=2, c="C0", label="model samples")
        gx, gy, density = panel["density"]
        bottom.contourf(gx, gy, density, levels=20)
    if col == 0:
        top.legend(fontsize=7, loc="upper left", markerscale=4)


def compare_figure(entries, x_test, image_shape, path, dpi=100):
    r"""Draws :func:`build_figure` into ``path``; returns ``path``, or ``None`` if there is no
    figure for this kind of data.

    :param entries: see :func:`build_figure`.
    :param x_test: held-out points.
    :param image_shape: ``(C, H, W)`` or ``None``.
    :param str path: the PNG file.
    :param int dpi: resolution.
    """
    return save_figure(build_figure(entries, x_test, image_shape), path, dpi)


def save_figure(fig, path, dpi=100):
    r"""Writes ``fig`` to ``path`` and closes it; returns ``path`` (``None`` when ``fig`` is).

    :param fig: a matplotlib ``Figure`` or ``None``.
    :param str path: the PNG file.
    :param int dpi: resolution.
    """
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
