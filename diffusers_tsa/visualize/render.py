"""matplotlib pictures of M-TSA motion masks (paper Fig. 4) and of correspondence maps of query tokens, teacher beside
student, at several temperatures (paper Fig. 1 and 3): one contact sheet as an RGB array, or a video as a list of them.

Figures are drawn on an Agg canvas with no pyplot state. matplotlib is an optional extra
(`pip install "diffusers-tsa[viz]"`), imported when a picture is drawn.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from einops import rearrange

from ..errors import GridError, UsageError


Grid = tuple[int, int, int]

#: What to install when matplotlib is missing.
VIZ_EXTRA = 'pip install "diffusers-tsa[viz]"'
_PANEL_INCHES = 2.2  # width of one picture in a figure
_DPI = 100
#: Perceptual, dark to yellow: its top is not the red of the clips' objects (the demo's ball), and it reads in grey.
HEATMAP = "viridis"
#: Opacity of a map over its frame, from P = 0 (the frame shows through) to the colour scale's top.
_HEAT_ALPHA = (0.1, 0.75)


def require_matplotlib() -> None:
    """Raises `ImportError` naming the `viz` extra when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"Rendering pictures needs matplotlib, an optional extra: {VIZ_EXTRA}") from None


def _images(frames: torch.Tensor) -> np.ndarray:
    """`(T, C, H, W)` in [-1, 1] -> `(T, H, W, 3)` uint8."""
    return rearrange(frames.float().add(1).mul(127.5).clamp(0, 255).byte().cpu(), "t c h w -> t h w c").numpy()


def _spread(first: int, last: int, count: int) -> list[int]:
    """At most `count` evenly spaced integers from `first` to `last`, both included."""
    if count < 1:
        raise UsageError(f"`num_columns={count}` must be at least 1.")
    return sorted({round(v) for v in np.linspace(first, last, min(count, last - first + 1))})


def _tubelet_frames(frames: torch.Tensor, num_token_frames: int) -> int:
    """Frames per token frame `Pt`, checked."""
    if frames.ndim != 4 or frames.shape[0] % num_token_frames:
        raise GridError(
            f"`frames` must be the (T, C, H, W) frames the teacher sees, T a multiple of the {num_token_frames} "
            f"token frames; got shape {tuple(frames.shape)}."
        )
    return frames.shape[0] // num_token_frames


def _figure(rows: int, cols: int, aspect: float, *, extra_width: float = 0.0):
    """A matplotlib figure (Agg canvas, no pyplot state) with a `rows x cols` grid of picture axes."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = (cols * _PANEL_INCHES + extra_width + 0.6, rows * _PANEL_INCHES * aspect + 0.9)
    figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def _pixels(figure) -> np.ndarray:
    """The rendered figure as `(H, W, 3)` uint8."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def _video_pixels(figure) -> np.ndarray:
    """`_pixels` for the frames of a video: the layout of the first is kept (one size, and much faster)."""
    picture = _pixels(figure)
    figure.set_layout_engine("none")
    return picture


def _label(axes, *, row: str, column: str | None, bottom: bool, left: bool) -> None:
    axes.tick_params(labelsize=6)
    axes.locator_params(nbins=4)
    if column is not None:
        axes.set_title(column, fontsize=8)
    if bottom:
        axes.set_xlabel("x (px)", fontsize=7)
    if left:
        axes.set_ylabel(f"{row}\ny (px)" if row else "y (px)", fontsize=7)


def _mask_overlay(mask: torch.Tensor) -> np.ndarray:
    """Bool `(H, W)` tokens -> RGBA: query tokens tinted red, the others darkened."""
    overlay = np.zeros((*mask.shape, 4), dtype=np.float32)
    selected = mask.cpu().numpy()
    overlay[selected] = (1.0, 0.15, 0.1, 0.45)
    overlay[~selected] = (0.0, 0.0, 0.0, 0.55)
    return overlay


def _mask_legend(figure) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(color=(1.0, 0.15, 0.1, 0.6), label="M-TSA query token"),
        Patch(color=(0.0, 0.0, 0.0, 0.55), label="not a query"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7, frameon=False)


def _check_masks(masks: torch.Tensor, ratios: Sequence[float]) -> torch.Tensor:
    masks = masks[None] if masks.ndim == 3 else masks
    if masks.ndim != 4 or masks.shape[0] != len(ratios):
        raise GridError(f"`masks` must be (R, F, H, W) for the {len(ratios)} ratios, got shape {tuple(masks.shape)}.")
    return masks


def render_motion_masks(
    frames: torch.Tensor, masks: torch.Tensor, ratios: Sequence[float], *, num_columns: int = 8
) -> np.ndarray:
    """A contact sheet of M-TSA query tokens (paper Fig. 4): a row per mask ratio `k`, a column per token frame.

    Args:
        frames (`torch.Tensor`): the frames the teacher sees, `(T, C, H, W)` in [-1, 1], at any size; token frame f
            shows frame `f * Pt` (`Pt = T / F`).
        masks (`torch.Tensor`): bool motion masks `(R, F, H', W')` (or `(F, H', W')` for one ratio), e.g.
            `motion_saliency_mask(frames, ...)[0]`.
        ratios (`Sequence[float]`): the `k` of each mask, for the row labels.
        num_columns (`int`, defaults to 8): token frames shown at most, evenly spaced.

    Returns:
        `np.ndarray`: the picture, `(height, width, 3)` uint8.
    """
    masks = _check_masks(masks, ratios)
    num_frames = masks.shape[1]
    per_token = _tubelet_frames(frames, num_frames)
    height, width = frames.shape[-2:]
    columns = _spread(0, num_frames - 1, num_columns)
    images = _images(frames)
    figure, axes = _figure(len(ratios), len(columns), height / width)
    extent = (0, width, height, 0)
    for r, ratio in enumerate(ratios):
        for c, f in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(images[f * per_token], extent=extent)
            ax.imshow(_mask_overlay(masks[r, f]), extent=extent, interpolation="nearest")
            _label(
                ax,
                row=f"k = {ratio:.0%}",
                column=f"token frame {f}" if r == 0 else None,
                bottom=r == len(ratios) - 1,
                left=c == 0,
            )
    _mask_legend(figure)
    return _pixels(figure)


def motion_mask_video(frames: torch.Tensor, masks: torch.Tensor, ratios: Sequence[float]) -> list[np.ndarray]:
    """Every frame the teacher sees with the query tokens of its token frame, a picture per mask ratio.

    Args:
        frames (`torch.Tensor`): `(T, C, H, W)` in [-1, 1], as for `render_motion_masks`.
        masks (`torch.Tensor`): bool `(R, F, H', W')` (or `(F, H', W')`).
        ratios (`Sequence[float]`): the `k` of each mask.

    Returns:
        `list[np.ndarray]`: `T` pictures `(height, width, 3)` uint8 of one size, for `save_mp4`.
    """
    masks = _check_masks(masks, ratios)
    per_token = _tubelet_frames(frames, masks.shape[1])
    height, width = frames.shape[-2:]
    images = _images(frames)
    figure, axes = _figure(1, len(ratios), height / width)
    extent = (0, width, height, 0)
    shown = []
    for r, ratio in enumerate(ratios):
        ax = axes[0, r]
        shown.append(
            (
                ax.imshow(images[0], extent=extent),
                ax.imshow(_mask_overlay(masks[r, 0]), extent=extent, interpolation="nearest"),
            )
        )
        _label(ax, row="", column=None, bottom=True, left=r == 0)
    _mask_legend(figure)
    pictures = []
    for t in range(frames.shape[0]):
        for r, (image, overlay) in enumerate(shown):
            image.set_data(images[t])
            overlay.set_data(_mask_overlay(masks[r, t // per_token]))
            axes[0, r].set_title(f"k = {ratios[r]:.0%}, frame {t} (token frame {t // per_token})", fontsize=8)
        pictures.append(_video_pixels(figure))
    return pictures


def _query_marker(ax, query: Grid, grid_hw: tuple[int, int], size: tuple[int, int]) -> None:
    """Outlines the query token's cell."""
    from matplotlib.patches import Rectangle

    (_, h, w), (grid_h, grid_w), (height, width) = query, grid_hw, size
    cell_h, cell_w = height / grid_h, width / grid_w
    ax.add_patch(Rectangle((w * cell_w, h * cell_h), cell_w, cell_h, fill=False, edgecolor="white", linewidth=1.5))
    ax.add_patch(Rectangle((w * cell_w, h * cell_h), cell_w, cell_h, fill=False, edgecolor="black", linewidth=0.6))


def _query_legend(figure) -> None:
    """The legend of the outlined cell and of the colours (as the motion-mask pictures have theirs)."""
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="none", edgecolor="black", linewidth=1.2, label="query token (in its own frame it matches "
              "itself: its cell is at the top of the scale)"),
        Patch(color=_colormap()(1.0), label="P, the query's correspondence to each token (low P: the clip shows)"),
    ]  # fmt: skip
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7, frameon=False)


def _colormap():
    from matplotlib import colormaps

    return colormaps[HEATMAP]


def heat_alpha(values: np.ndarray, top: float) -> np.ndarray:
    """The opacity of each map value over its frame: low probabilities let the clip show through."""
    low, high = _HEAT_ALPHA
    return low + (high - low) * np.clip(values / max(top, 1e-12), 0.0, 1.0)


def _heat(ax, values: np.ndarray, extent, top: float):
    """Draws `values` over the frame already in `ax`, coloured and made opaque in proportion to `values / top`."""
    return ax.imshow(
        values,
        extent=extent,
        cmap=HEATMAP,
        vmin=0.0,
        vmax=top,
        alpha=heat_alpha(values, top),
        interpolation="nearest",
    )


def _check_maps(maps: Mapping[str, torch.Tensor], temperatures: Sequence[float]) -> tuple[int, int, int]:
    shapes = {tuple(m.shape) for m in maps.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4 or next(iter(shapes))[0] != len(temperatures):
        raise GridError(
            f"`maps` must each be (T, F, H, W) for the {len(temperatures)} temperatures, got shapes {sorted(shapes)}."
        )
    return next(iter(shapes))[1:]


def _scale(maps: torch.Tensor, query_frame: int) -> float:
    """The colour scale's top for one (model, temperature): the largest probability of the later frames (the query's
    own frame, where it finds itself, may saturate), or of the query frame when it is the last."""
    later = maps[query_frame + 1 :] if query_frame + 1 < maps.shape[0] else maps[query_frame:]
    return float(later.max())


def _colour_bar(figure, heat, axes) -> None:
    """An opaque colour bar of probabilities for the maps `heat` shows (drawn translucent over the frames)."""
    from matplotlib.cm import ScalarMappable

    bar = figure.colorbar(ScalarMappable(norm=heat.norm, cmap=heat.cmap), ax=axes, shrink=0.9, pad=0.01)
    bar.set_label("P (probability)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def render_correspondence(
    frames: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    query: Grid,
    temperatures: Sequence[float],
    *,
    num_columns: int = 8,
    title: str | None = None,
) -> np.ndarray:
    """Correspondence maps `P_{i,f}` of one query token over the frames from its own on (paper Fig. 1 and 3): a row
    per (temperature, model), a column per token frame, each map over its frame, with a colour bar per row.

    Args:
        frames (`torch.Tensor`): the frames the teacher sees, `(T, C, H, W)` in [-1, 1], at any size; token frame f
            shows frame `f * Pt` (`Pt = T / F`).
        maps (`Mapping[str, torch.Tensor]`): model name (`"teacher"`, `"student"`) -> this query's maps
            `(len(temperatures), F, H', W')`, e.g. `correspondence_maps(features, queries, tau=temperatures)[:, q]`.
        query (`tuple[int, int, int]`): the query token `(f, h, w)`, outlined in its frame.
        temperatures (`Sequence[float]`): the temperatures of the maps.
        num_columns (`int`, defaults to 8): token frames shown at most, evenly spaced from the query's to the last.
        title (`str`, *optional*): the picture's title, e.g. the training step the student is at.

    Returns:
        `np.ndarray`: the picture, `(height, width, 3)` uint8, with a legend of the query's cell and the colours.
    """
    num_frames, grid_h, grid_w = _check_maps(maps, temperatures)
    per_token = _tubelet_frames(frames, num_frames)
    height, width = frames.shape[-2:]
    columns = _spread(query[0], num_frames - 1, num_columns)
    rows = [(tau, name) for tau in temperatures for name in maps]
    images = _images(frames)
    figure, axes = _figure(len(rows), len(columns), height / width, extra_width=0.8)
    extent = (0, width, height, 0)
    for r, (tau, name) in enumerate(rows):
        row_maps = maps[name][list(temperatures).index(tau)]
        top = _scale(row_maps, query[0])
        for c, f in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(images[f * per_token], extent=extent)
            heat = _heat(ax, row_maps[f].cpu().numpy(), extent, top)
            if f == query[0]:
                _query_marker(ax, query, (grid_h, grid_w), (height, width))
            column = f"token frame {f}" + (" (query)" if f == query[0] else "")
            _label(
                ax,
                row=f"{name}, τ = {tau:g}",
                column=column if r == 0 else None,
                bottom=r == len(rows) - 1,
                left=c == 0,
            )
        _colour_bar(figure, heat, axes[r, :])
    _query_legend(figure)
    if title:
        figure.suptitle(title, fontsize=9)
    return _pixels(figure)


def correspondence_video(
    frames: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    query: Grid,
    temperatures: Sequence[float],
    *,
    title: str | None = None,
) -> list[np.ndarray]:
    """One picture per token frame from the query's on: the query frame with the query outlined, then each model's
    map over that frame, a row per temperature; colour scales are fixed over the video.

    Args:
        frames (`torch.Tensor`): `(T, C, H, W)` in [-1, 1], as for `render_correspondence`.
        maps (`Mapping[str, torch.Tensor]`): model name -> `(len(temperatures), F, H', W')`.
        query (`tuple[int, int, int]`): the query token `(f, h, w)`.
        temperatures (`Sequence[float]`): the temperatures of the maps.
        title (`str`, *optional*): the title of every picture.

    Returns:
        `list[np.ndarray]`: `F - f_query` pictures `(height, width, 3)` uint8 of one size, for `save_mp4`.
    """
    num_frames, grid_h, grid_w = _check_maps(maps, temperatures)
    per_token = _tubelet_frames(frames, num_frames)
    height, width = frames.shape[-2:]
    names = list(maps)
    images = _images(frames)
    figure, axes = _figure(len(temperatures), 1 + len(names), height / width, extra_width=0.8)
    extent = (0, width, height, 0)
    shown = []
    for r, tau in enumerate(temperatures):
        axes[r, 0].imshow(images[query[0] * per_token], extent=extent)
        _query_marker(axes[r, 0], query, (grid_h, grid_w), (height, width))
        _label(
            axes[r, 0],
            row=f"τ = {tau:g}",
            column=f"query (token frame {query[0]})" if r == 0 else None,
            bottom=r == len(temperatures) - 1,
            left=True,
        )
        for c, name in enumerate(names, start=1):
            ax = axes[r, c]
            image = ax.imshow(images[query[0] * per_token], extent=extent)
            top = _scale(maps[name][r], query[0])
            heat = _heat(ax, maps[name][r, query[0]].cpu().numpy(), extent, top)
            _label(ax, row="", column=None, bottom=r == len(temperatures) - 1, left=False)
            shown.append((r, c, name, image, heat, top))
        _colour_bar(figure, heat, axes[r, 1:])
    _query_legend(figure)
    if title:
        figure.suptitle(title, fontsize=9)
    pictures = []
    for f in range(query[0], num_frames):
        for r, c, name, image, heat, top in shown:
            image.set_data(images[f * per_token])
            values = maps[name][r, f].cpu().numpy()
            heat.set_data(values)
            heat.set_alpha(heat_alpha(values, top))
            if r == 0:
                axes[r, c].set_title(f"{name}, token frame {f}", fontsize=8)
        pictures.append(_video_pixels(figure))
    return pictures
