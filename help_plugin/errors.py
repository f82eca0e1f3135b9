"""The library's own error types share one base, :class:`HelpPluginError`, so that a caller (the ``help-nas``
command line) can tell a user-facing problem (a bad file, value, store or device) from an internal bug.

Each concrete error also derives from the built-in type it has always been (``CheckpointError`` is a
``ValueError``, ``StoreError`` a ``RuntimeError``, ...). This module imports nothing heavy.
"""
from __future__ import annotations


class HelpPluginError(Exception):
    """A problem with what the user gave (a file, a value, a store, a device), explained in its message."""


class DataFileError(HelpPluginError, ValueError):
    """A data file (e.g. a ``.pt`` of HELP's layout) that cannot be read."""


class DeviceError(HelpPluginError, RuntimeError):
    """A device cannot measure: its backend or hardware is missing here, or its black box failed."""
