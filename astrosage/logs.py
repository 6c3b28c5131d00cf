"""Console logging with rich, and a filter that keeps secrets (HF / W&B / API tokens) out of logs."""

from __future__ import annotations

import logging
import os
from typing import Iterable

#: Environment variables whose values must never appear in a log line.
SECRET_ENV_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "WANDB_API_KEY",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
REDACTED = "***"


class SecretRedactor(logging.Filter):
    """Replaces the values of secret environment variables in every record with ``***``."""

    def __init__(self, extra_env_vars: Iterable[str] = ()):
        super().__init__()
        self.env_vars = tuple(dict.fromkeys((*SECRET_ENV_VARS, *extra_env_vars)))

    def _secrets(self) -> list[str]:
        # read at log time: a token exported after start-up is still caught
        values = [os.environ.get(name, "") for name in self.env_vars]
        return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets()
        if not secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # tracebacks are formatted apart from the message: format here, redacted, and keep
            # only the text (handlers print exc_text and leave exc_info alone once it is set)
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def setup_logging(
    level: str = "INFO", extra_secret_env_vars: Iterable[str] = (), log_file: str | os.PathLike | None = None
) -> logging.Logger:
    """Configure the ``astrosage`` logger: rich console (+ an optional plain log file), secrets redacted.

    Idempotent: handlers installed by an earlier call are replaced.
    """
    from rich.logging import RichHandler

    logger = logging.getLogger("astrosage")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_astrosage", False):
            logger.removeHandler(handler)
            handler.close()
    redactor = SecretRedactor(extra_secret_env_vars)
    handlers: list[logging.Handler] = [RichHandler(show_path=False, rich_tracebacks=False, markup=False, log_time_format="[%X]")]
    if log_file is not None:
        os.makedirs(os.path.dirname(os.fspath(log_file)) or ".", exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        handler._astrosage = True  # type: ignore[attr-defined]
        handler.addFilter(redactor)
        logger.addHandler(handler)
    logger.propagate = False
    return logger
