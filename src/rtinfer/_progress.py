"""The progress callback long-running work takes: called with one short line at a time."""

from collections.abc import Callable

__all__ = ["Progress"]

Progress = Callable[[str], None]
