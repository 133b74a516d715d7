"""The engine layer: every Docker Engine API call the provider makes (``api.Engine``), the clients under it
(``clients``), the API version spoken to each daemon (``versions``) and the per-daemon start slots (``start_slots``)."""

from remote_docker.engine.api import CONNECTION_ERRORS, Engine, EngineError, ErrorKind, classify

__all__ = ["CONNECTION_ERRORS", "Engine", "EngineError", "ErrorKind", "classify"]
