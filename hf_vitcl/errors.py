"""Errors a user can act on: each names the field at fault and what would be valid."""


class ConfigError(ValueError):
    """A setting, a dataset or a model that cannot work; raised before any training starts."""


class HubAccessError(ConfigError):
    """A Hub id was given but the Hub cannot be reached and nothing is cached locally."""

    def __init__(self, kind: str, name: str):
        super().__init__(
            f"{kind} '{name}' is neither a local path nor reachable on the Hub "
            "(offline or no network): pass a local path, or allow Hub access (unset HF_HUB_OFFLINE)"
        )


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight: the run stops before anything of the task is
    saved, so every checkpoint and result on disk comes from finite weights."""
