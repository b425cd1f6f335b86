"""Telling a local path from a Hub id, so that a mistyped path fails at once instead of after the Hub's retries, and
saying in one line when a Hub id cannot be fetched because the Hub cannot be reached."""

from __future__ import annotations

import difflib
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
    than one `/` is a path; so is `folder/name` where `folder` is an existing local folder (`tiny/videomae`)."""
    text = os.fspath(value)
    return (
        text.startswith((".", "/", "~"))
        or text.endswith("/")
        or "\\" in text
        or text.count("/") > 1
        or bool(_DRIVE.match(text) or _EXTENSION.search(text))
        or (text.count("/") == 1 and os.path.isdir(text.split("/")[0]))
    )


def check_local_path(value: str | os.PathLike | None, argument: str) -> None:
    """Raises `UsageError` naming `argument` when `value` looks like a local path that does not exist.

    Args:
        value (`str` or `os.PathLike`, *optional*): a Hub id or a local path (nothing is checked for `None`).
        argument (`str`): the argument's name, for the message.
    """
    if value is None or not looks_like_local_path(value) or os.path.exists(os.path.expanduser(value)):
        return
    text = os.fspath(value)
    raise UsageError(
        f"`{argument}={text!r}` looks like a local path, but nothing exists there (relative paths start from "
        f"{os.getcwd()}){_close_match(text)}; fix the path, or give a Hub id as `owner/name`."
    )


def _close_match(text: str) -> str:
    """`; did you mean 'tiny/videomae'?` when the missing path's folder exists and holds a name close to its last
    part, else nothing."""
    folder, name = os.path.split(text.rstrip("/\\"))
    try:
        names = os.listdir(os.path.expanduser(folder or "."))
    except OSError:
        return ""
    found = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {os.path.join(folder, found[0])!r}?" if found else ""


def hub_unreachable(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says that the Hub could not be reached (offline mode,
    `HF_HUB_OFFLINE=1`, or no connection) and the files are not in the Hub cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def refuse_unreachable_hub(error: BaseException, value: str | os.PathLike, argument: str) -> None:
    """Raises `UsageError` naming `argument` when `error` (raised while fetching `value`) says the Hub cannot be
    reached (`hub_unreachable`); returns otherwise, for the caller to handle `error`.

    Args:
        error (`BaseException`): what loading `value` raised.
        value (`str` or `os.PathLike`): the Hub id (or path) that was being loaded.
        argument (`str`): the argument's name, for the message.
    """
    if not hub_unreachable(error):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    why = "HF_HUB_OFFLINE is set" if offline else "no connection"
    raise UsageError(
        f"`{argument}={os.fspath(value)!r}` is not a local path (relative paths start from {os.getcwd()}) and the "
        f"Hub cannot be reached ({why}) to fetch it, nor is it in the Hub cache; fix the path, or connect and rerun."
    )
