"""Kits built at reduced size once per test session (inside pytest's temp folder)."""

from __future__ import annotations

import pytest

from rtinfer import kits
from rtinfer.kits import Kit


@pytest.fixture(scope="session")
def fraud_kit() -> Kit:
    return kits.load("fraud", size="small")


@pytest.fixture(scope="session")
def perception_kit() -> Kit:
    return kits.load("perception", size="small")


@pytest.fixture(scope="session")
def intent_kit() -> Kit:
    return kits.load("intent", size="small")
