"""Exceptions raised by flowaug. Every message says what went wrong and what to do."""


class FlowaugError(Exception):
    """Base class of every error flowaug raises on purpose."""


class DatasetNotFoundError(FlowaugError, FileNotFoundError):
    """A dataset file is missing; the message names the file and how to obtain it."""


class DataFormatError(FlowaugError, ValueError):
    """A file exists but is truncated, of the wrong format or inconsistent."""


class ChecksumMismatchError(FlowaugError, ValueError):
    """A file's sha256 differs from the known value."""


class CheckpointError(FlowaugError, ValueError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


class UnknownPretrainedError(FlowaugError, ValueError):
    """A name that is neither a registered pretrained model nor an existing checkpoint file."""
