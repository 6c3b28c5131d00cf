"""Secrets never reach the logs."""

from __future__ import annotations

import logging

from astrosage.core.logs import SecretRedactor, setup_logging


def test_tokens_are_redacted_from_messages_and_args(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefSECRET123")
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-teacher-987654")
    logger = setup_logging("INFO", extra_secret_env_vars=["MY_TEACHER_KEY"])
    logger.info("uploading with token hf_abcdefSECRET123")
    logger.info("headers: %s", {"Authorization": "Bearer sk-teacher-987654"})
    err = capsys.readouterr()
    text = err.out + err.err
    assert "hf_abcdefSECRET123" not in text and "sk-teacher-987654" not in text
    assert text.count("***") == 2


def test_short_or_unset_values_are_not_redacted(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "1")  # too short to be a real key; do not mangle logs
    record = logging.LogRecord("astrosage", logging.INFO, __file__, 1, "step 1 loss 1.0", None, None)
    SecretRedactor().filter(record)
    assert record.getMessage() == "step 1 loss 1.0"
