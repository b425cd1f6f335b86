"""Flags and flag values kept under an old name for a release, with a warning that names the new one."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Mapping


class DeprecatedNames(argparse.Action):
    """An `argparse` action storing the value like `store`, that warns when the flag is spelled with a deprecated
    option string or given a deprecated value.

    Args:
        deprecated_flags (`Mapping[str, str]`, *optional*): old option string -> why it changed (shown in the
            warning, after the new name).
        deprecated_values (`Mapping[str, str]`, *optional*): old value -> the value it now stands for.
    """

    def __init__(
        self,
        option_strings,
        dest,
        *,
        deprecated_flags: Mapping[str, str] | None = None,
        deprecated_values: Mapping[str, str] | None = None,
        **kwargs,
    ):
        self.deprecated_flags = dict(deprecated_flags or {})
        self.deprecated_values = dict(deprecated_values or {})
        if kwargs.get("choices") is not None:
            kwargs["choices"] = (*kwargs["choices"], *self.deprecated_values)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        flag = self.option_strings[0]
        if option_string in self.deprecated_flags:
            warnings.warn(
                f"{option_string} is deprecated: use {flag} ({self.deprecated_flags[option_string]}).",
                FutureWarning,
                stacklevel=2,
            )
        if values in self.deprecated_values:
            new = self.deprecated_values[values]
            warnings.warn(f"{flag} {values} is deprecated: use {flag} {new}.", FutureWarning, stacklevel=2)
            values = new
        setattr(namespace, self.dest, values)
