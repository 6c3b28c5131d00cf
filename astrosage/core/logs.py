"""Console logging with rich, and a filter that keeps secrets (HF / W&B / API tokens) out of logs."""

from __future__ import annotations

import logging
import os
import re
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

#: values shaped like the tokens people paste by mistake: Hugging Face, OpenAI-style ``sk-``, GitHub,
#: AWS access key ids. A bare 40-hex string (a wandb API key) is indistinguishable from a git commit, so
#: it is redacted where it follows a key/token/secret name (``WANDB_API_KEY=...``, ``"api_key": "..."``).
_TOKEN_RE = re.compile(
    r"\bhf_[A-Za-z0-9]{20,}"
    r"|\bsk-[A-Za-z0-9_-]{20,}"
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
)
_KEYED_HEX_RE = re.compile(r"(?i)((?:key|token|secret|passw(?:or)?d)[\w.-]*[\"']?\s*[:=]\s*[\"']?)[0-9a-f]{40}\b")
_URL_PASSWORD_RE = re.compile(r"(://[^/\s:@]+:)[^@\s/]+(@)")
_BARE_HEX40_RE = re.compile(r"[0-9a-fA-F]{40}")


def redact_tokens(text: str) -> str:
    """``text`` with token-shaped values (see ``_TOKEN_RE``), keyed 40-hex keys and URL passwords as ``***``."""
    text = _TOKEN_RE.sub(REDACTED, text)
    text = _KEYED_HEX_RE.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)


def looks_like_token(value: str) -> bool:
    """True for a value that is a secret rather than a name (token-shaped, or a bare 40-hex key)."""
    return redact_tokens(value) != value or bool(_BARE_HEX40_RE.fullmatch(value.strip()))


def redact_json(value):
    """A JSON-like value (dicts, lists, strings) with :func:`redact_tokens` applied to every string."""
    if isinstance(value, str):
        return redact_tokens(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v) for v in value]
    return value


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
        """The values of the secret variables, then anything token-shaped (:func:`redact_tokens`)."""
        for secret in self._secrets():
            text = text.replace(secret, REDACTED)
        return redact_tokens(text)

    def filter(self, record: logging.LogRecord) -> bool:
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
