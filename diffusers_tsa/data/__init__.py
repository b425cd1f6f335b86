"""Training clips: reading them (`read_video`) and finding them (`load_video_dataset`)."""

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


__all__ = [
    "CAPTION",
    "VIDEO",
    "VIDEO_BACKENDS",
    "ClipSpec",
    "VideoSource",
    "available_video_backends",
    "check_some_clip_reads",
    "describe_source",
    "load_video_dataset",
    "read_video",
    "select_frame_indices",
    "use_video_backend",
]
