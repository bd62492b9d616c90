"""Generation backends behind one protocol: transformers (CPU/GPU), vLLM, any OpenAI-compatible server."""

from tracemill.llm.base import BACKENDS, Backend, Completion, LLMParams, Request, check_model_dir, load_backend

__all__ = ["BACKENDS", "Backend", "Completion", "LLMParams", "Request", "check_model_dir", "load_backend"]
