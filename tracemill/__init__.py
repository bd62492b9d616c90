"""tracemill: a versioned dataset factory for LLM reasoning data."""

__version__ = "0.1.0"
