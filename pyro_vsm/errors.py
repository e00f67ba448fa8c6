r"""The exceptions the library raises, in one place."""

__all__ = ["NonFiniteLossError", "ScoreObjectiveError"]


class ScoreObjectiveError(ValueError):
    r"""A model/guide pair, or data, that an objective cannot handle (the message names the
    site)."""


class NonFiniteLossError(FloatingPointError):
    r"""Raised instead of taking an optimizer step on a NaN or infinite loss.

    The message names the loss, the step, the phase, the objective and the site that produced the
    first non-finite term; no parameter has moved when it is raised.
    """
