"""Exceptions the CLI turns into one clear line on stderr and a non-zero exit."""


class TopformerDeployError(Exception):
    """Base class of the errors this tool reports to users (exit code 2 unless said otherwise)."""

    exit_code = 2


class CheckpointError(TopformerDeployError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""
