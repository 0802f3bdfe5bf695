"""Fixtures for the evaluation tests."""
import pytest

from eval_helpers import byte_tokenizer


@pytest.fixture(scope="session")
def tok():
    return byte_tokenizer()
