"""Telling a local path from a Hub id, so that a mistyped path fails at once instead of after the Hub's retries."""

from __future__ import annotations

import os
import re

from .errors import UsageError


#: A file extension: `.safetensors`, or a dot, a letter, then up to five letters or digits (`.csv`, `.pth`; not
#: `-0.9.5` or `2.1-T2V`).
_EXTENSION = re.compile(r"\.(safetensors|[A-Za-z][A-Za-z0-9]{0,5})$")
#: A Windows drive (`C:`), which no Hub id starts with.
_DRIVE = re.compile(r"^[A-Za-z]:")


def looks_like_local_path(value: str | os.PathLike) -> bool:
    """Whether `value` can only be a local path: a Hub id is `name` or `owner/name`, so a value with a file
    extension, starting with `.`, `/`, `~` or a Windows drive (`C:`), ending with `/`, or holding a backslash or more
    than one `/` is a path."""
    text = os.fspath(value)
    return (
        text.startswith((".", "/", "~"))
        or text.endswith("/")
        or "\\" in text
        or text.count("/") > 1
        or bool(_DRIVE.match(text) or _EXTENSION.search(text))
    )


def check_local_path(value: str | os.PathLike | None, argument: str) -> None:
    """Raises `UsageError` naming `argument` when `value` looks like a local path that does not exist.

    Args:
        value (`str` or `os.PathLike`, *optional*): a Hub id or a local path (nothing is checked for `None`).
        argument (`str`): the argument's name, for the message.
    """
    if value is None or not looks_like_local_path(value) or os.path.exists(os.path.expanduser(value)):
        return
    raise UsageError(
        f"`{argument}={os.fspath(value)!r}` looks like a local path, but nothing exists there (relative paths start "
        f"from {os.getcwd()}); fix the path, or give a Hub id as `owner/name`."
    )
