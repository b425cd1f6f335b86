"""Pictures of what the alignment does: M-TSA motion masks (paper Fig. 4) and correspondence maps of query tokens,
teacher beside student, at several temperatures (paper Fig. 1 and 3).

Everything here works on tensors, so a training script can render them at validation time and log the images; the
command line `python -m diffusers_tsa.visualize {mask,correspondence}` reads a clip and the models for you. Rendering
needs matplotlib, an optional extra: `pip install "diffusers-tsa[viz]"`.

- Frames: `teacher_frames` picks the frames a teacher sees (its `prepare`), at any display size; `salient_queries`
  picks the most dynamic tokens of one frame.
- Student: `student_features` runs a model at a chosen timestep with its alignment block hooked, projected onto the
  teacher grid by a trained projector, or resampled there without one.
- Pictures: `render_motion_masks`, `render_correspondence` (one contact sheet, an RGB array) and
  `motion_mask_video`, `correspondence_video` (a list of RGB arrays); `save_png`, `save_mp4` write them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..adapters.adapter import ModelAdapter
from ..errors import GridError, UsageError
from ..masking import motion_saliency_mask
from ..projector import AlignmentProjector, GridResampling
from ..teachers import TeacherInput, VideoTeacher


Grid = tuple[int, int, int]

#: What to install when matplotlib is missing.
VIZ_EXTRA = 'pip install "diffusers-tsa[viz]"'
_PANEL_INCHES = 2.2  # width of one picture in a figure
_DPI = 100
_HEATMAP = "turbo"


def require_matplotlib() -> None:
    """Raises `ImportError` naming the `viz` extra when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"Rendering pictures needs matplotlib, an optional extra: {VIZ_EXTRA}") from None


# --- Frames and queries -------------------------------------------------------------------------------------------


def teacher_frames(video: torch.Tensor, input: TeacherInput, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The frames a teacher with `input` sees of `video` (`VideoTeacher.prepare`: the same selection), at its input
    size or at `size`, e.g. the clip's own, for display. Reads no weight.

    Args:
        video (`torch.Tensor`): clips in [-1, 1] of shape `(B, T, C, H, W)`.
        input (`TeacherInput`): what the teacher sees (`teacher.input`, or `TeacherInput.for_clip(...)`).
        size (`tuple[int, int]`, *optional*): `(height, width)` of the returned frames; `None` is the teacher's.

    Returns:
        `torch.Tensor`: `(B, input.num_frames, C, height, width)` in [-1, 1].
    """
    if size is not None:
        input = dataclasses.replace(input, height=size[0], width=size[1])
    # `prepare` reads only the input; patch 1 accepts any display size.
    selector = VideoTeacher(nn.Identity(), name="frames", input=input, patch_size=1, tubelet_size=1, hidden_size=1)
    return selector.prepare(video)


def salient_queries(frames: torch.Tensor, tubelet: tuple[int, int, int], *, frame: int, k: int) -> list[Grid]:
    """The `k` most dynamic tokens of token frame `frame` (Eq. 11-12, ranked by motion), as `(f, h, w)` queries.

    Args:
        frames (`torch.Tensor`): the frames the teacher sees, `(T, C, H, W)` (`teacher_frames` or `teacher.prepare`).
        tubelet (`tuple[int, int, int]`): the teacher's `(Pt, Ph, Pw)`.
        frame (`int`): token frame of the queries.
        k (`int`): number of queries, at most the tokens of a frame.

    Returns:
        `list[tuple[int, int, int]]`: `(frame, h, w)` tokens in row-major order.
    """
    _, _, height, width = frames.shape
    tokens_per_frame = (height // tubelet[1]) * (width // tubelet[2])
    if not 1 <= k <= tokens_per_frame:
        raise GridError(f"`top_k={k}` must be in [1, {tokens_per_frame}], the tokens of one teacher frame.")
    mask = motion_saliency_mask(frames[None], tubelet=tubelet, ratio=k / tokens_per_frame)[0]  # exactly k a frame
    if not 0 <= frame < mask.shape[0]:
        raise GridError(f"`query_frame={frame}` must be a teacher token frame in [0, {mask.shape[0] - 1}].")
    return [(frame, h, w) for h, w in mask[frame].nonzero().tolist()]


# --- Student features ---------------------------------------------------------------------------------------------


@torch.no_grad()
def student_features(
    adapter: ModelAdapter,
    videos: torch.Tensor,
    *,
    depth: int,
    timestep: int,
    prompts: str | Sequence[str] = "",
    projector: AlignmentProjector | None = None,
    teacher_grid: Grid | None = None,
    drop_first_frame: bool | None = True,
    moments: torch.Tensor | None = None,
    text: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The student's features of clips at one noise level (paper Eq. 5), as training computes them.

    The clips are encoded (`encode_videos`), noised at `timestep` and run through the adapter's training forward
    (`diffusion_loss`, in train mode as training runs it) with block `depth` hooked; its video tokens
    (`alignment_tokens`) are projected by `projector`. Without a projector (a base model), the raw block tokens are
    brought to `teacher_grid` instead: the first latent frame dropped as a projector would drop it
    (`GridResampling`), then area-resampled (averaged where the grid shrinks, repeated where it grows). Their width
    stays the model's; correspondences only compare tokens of one model, so they need no common width.

    Args:
        adapter (`ModelAdapter`): the student, e.g. `ADAPTERS[spec.family].from_pretrained(spec)`, or the training
            script's own.
        videos (`torch.Tensor`): clips in [-1, 1] of shape `(B, T, C, H, W)`.
        depth (`int`): the aligned block, counted from 1.
        timestep (`int`): noise level in `[0, num_train_timesteps)` (flow matching: `sigma = timestep / 1000`).
        prompts (`str` or `Sequence[str]`, defaults to `""`): the text conditioning, one for all clips or one each.
        projector (`AlignmentProjector`, *optional*): the trained projector h.
        teacher_grid (`tuple[int, int, int]`, *optional*): where raw tokens go without a projector.
        drop_first_frame (`bool`, *optional*, defaults to `True`): whether the teacher skips pixel frame 0
            (`TeacherInput.drop_first_frame`), for raw tokens.
        moments (`torch.Tensor`, *optional*): the clips' `latent_moments` `(B, 2C, F, H, W)`, computed beforehand
            (or precomputed): a latent is sampled from them instead of encoding `videos`.
        text (`dict[str, torch.Tensor]`, *optional*): the prompts' `text_encoder_outputs`, used instead of encoding
            `prompts`.

    Returns:
        `torch.Tensor`: `(B, F, H, W, C)` features on the teacher grid, fp32; `C` is the teacher's width with a
        projector, the block's without.
    """
    if projector is None and teacher_grid is None:
        raise ValueError("Pass a `projector`, or the `teacher_grid` the raw tokens are resampled to.")
    batch = videos.shape[0]
    prompts = [prompts] * batch if isinstance(prompts, str) else list(prompts)
    latents = adapter.encode_videos(videos) if moments is None else adapter.sample_latents(moments)
    conditioning = adapter.encode_prompts(prompts) if text is None else adapter.conditioning(text)
    transformer, training = adapter.transformer, adapter.transformer.training
    timesteps = torch.full((batch,), timestep, dtype=torch.long)
    with adapter.feature_extractor(transformer, depth) as extractor, extractor.capture() as captured:
        transformer.train()
        try:
            adapter.diffusion_loss(transformer, latents, conditioning, timesteps=timesteps)
        finally:
            transformer.train(training)
    tokens = adapter.alignment_tokens(captured.hidden_states, batch).float()  # (B, F_s * H_s * W_s, D)
    if projector is not None:
        return projector(tokens.to(next(projector.parameters()))).float()
    num_frames, _, height, width = videos.shape[1:]
    student_grid = adapter.spec.token_grid(num_frames, height, width)
    return resample_tokens(tokens, student_grid, teacher_grid, drop_first_frame=drop_first_frame)


def resample_tokens(
    tokens: torch.Tensor, student_grid: Grid, teacher_grid: Grid, *, drop_first_frame: bool | None = True
) -> torch.Tensor:
    """Raw block tokens `(B, F_s * H_s * W_s, D)` -> `(B, F_t, H_t, W_t, D)` on the teacher grid, with no learned
    weight: the first frame dropped as `GridResampling.between` decides, then area resampling (`F.interpolate`)."""
    resampling = GridResampling.between(student_grid, teacher_grid, drop_first_frame)
    f, h, w = student_grid
    grid = rearrange(tokens, "b (f h w) d -> b d f h w", f=f, h=h, w=w)[:, :, int(resampling.drop_first_frame) :]
    return rearrange(F.interpolate(grid, size=tuple(teacher_grid), mode="area"), "b d f h w -> b f h w d")


# --- Pictures ---------------------------------------------------------------------------------------------------


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

    Returns:
        `np.ndarray`: the picture, `(height, width, 3)` uint8.
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
            heat = ax.imshow(
                row_maps[f].cpu().numpy(),
                extent=extent,
                cmap=_HEATMAP,
                vmin=0.0,
                vmax=top,
                alpha=0.6,
                interpolation="nearest",
            )
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
    return _pixels(figure)


def correspondence_video(
    frames: torch.Tensor, maps: Mapping[str, torch.Tensor], query: Grid, temperatures: Sequence[float]
) -> list[np.ndarray]:
    """One picture per token frame from the query's on: the query frame with the query outlined, then each model's
    map over that frame, a row per temperature; colour scales are fixed over the video.

    Args:
        frames (`torch.Tensor`): `(T, C, H, W)` in [-1, 1], as for `render_correspondence`.
        maps (`Mapping[str, torch.Tensor]`): model name -> `(len(temperatures), F, H', W')`.
        query (`tuple[int, int, int]`): the query token `(f, h, w)`.
        temperatures (`Sequence[float]`): the temperatures of the maps.

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
            heat = ax.imshow(
                maps[name][r, query[0]].cpu().numpy(),
                extent=extent,
                cmap=_HEATMAP,
                vmin=0.0,
                vmax=_scale(maps[name][r], query[0]),
                alpha=0.6,
                interpolation="nearest",
            )
            _label(ax, row="", column=None, bottom=r == len(temperatures) - 1, left=False)
            shown.append((r, c, name, image, heat))
        _colour_bar(figure, heat, axes[r, 1:])
    pictures = []
    for f in range(query[0], num_frames):
        for r, c, name, image, heat in shown:
            image.set_data(images[f * per_token])
            heat.set_data(maps[name][r, f].cpu().numpy())
            if r == 0:
                axes[r, c].set_title(f"{name}, token frame {f}", fontsize=8)
        pictures.append(_video_pixels(figure))
    return pictures


# --- Files --------------------------------------------------------------------------------------------------------


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Writes an `(H, W, 3)` uint8 picture as a PNG (creating its folder) and returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


def save_mp4(pictures: Sequence[np.ndarray], path: str | os.PathLike, *, fps: float = 8) -> Path:
    """Writes `(H, W, 3)` uint8 pictures of one size as an H.264 mp4 with diffusers' `export_to_video` (imageio-ffmpeg),
    padded with white to a multiple of 16 pixels, and returns the path."""
    from diffusers.utils import export_to_video
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = pictures[0].shape[:2]
    pad = ((0, -height % 16), (0, -width % 16), (0, 0))
    export_to_video([Image.fromarray(np.pad(p, pad, constant_values=255)) for p in pictures], str(path), fps=fps)
    return path


__all__ = [
    "VIZ_EXTRA",
    "correspondence_video",
    "motion_mask_video",
    "render_correspondence",
    "render_motion_masks",
    "require_matplotlib",
    "resample_tokens",
    "salient_queries",
    "save_mp4",
    "save_png",
    "student_features",
    "teacher_frames",
]
