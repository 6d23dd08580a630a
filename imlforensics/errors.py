"""Exceptions that carry a one-line, user-facing reason."""


class ImlfError(Exception):
    """Base class: str(exc) is a complete one-line explanation for the user."""


class ImageError(ImlfError):
    """The input cannot be read as an image (missing, empty, corrupt, too large, ...)."""


class NotApplicable(ImlfError):
    """The detector cannot analyse this input (e.g. a JPEG-only detector given a PNG)."""


class OutputError(ImlfError):
    """An output cannot be written (exists without --overwrite, unwritable folder, ...)."""


class UnknownDetector(ImlfError):
    """No detector is registered under that name."""


class DatasetError(ImlfError):
    """A dataset folder or list cannot be read."""
