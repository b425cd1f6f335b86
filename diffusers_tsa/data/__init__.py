"""Training clips: reading them (`read_video`) and finding them (`load_video_dataset`).

The names are imported on first use: `columns` needs no torch.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports


if TYPE_CHECKING:
    from .columns import CAPTION, VIDEO
    from .sources import check_some_clip_reads, load_video_dataset
    from .video import (
        VIDEO_BACKENDS,
        ClipSpec,
        VideoSource,
        available_video_backends,
        describe_source,
        read_video,
        select_frame_indices,
        use_video_backend,
    )


#: Public name -> the module it comes from.
_SOURCES = {
    "CAPTION": ".columns",
    "ClipSpec": ".video",
    "VIDEO": ".columns",
    "VIDEO_BACKENDS": ".video",
    "VideoSource": ".video",
    "available_video_backends": ".video",
    "check_some_clip_reads": ".sources",
    "describe_source": ".video",
    "load_video_dataset": ".sources",
    "read_video": ".video",
    "select_frame_indices": ".video",
    "use_video_backend": ".video",
}

__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
