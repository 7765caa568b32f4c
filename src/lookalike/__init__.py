"""lookalike: 1:N face identification that gets the top of the ranked candidate list right."""

__version__ = "0.1.0"
