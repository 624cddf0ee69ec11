"""Fixtures of the exports tests: a MEDIA_ROOT of their own, a ward with readings."""

from pathlib import Path

import pytest

from exports.tests.factories import readings_create
from patients.models import Patient
from patients.tests.factories import PatientFactory


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    """Export files go to a temporary MEDIA_ROOT, not the checkout's var/media."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def patient(db) -> Patient:
    """bob, with 23 readings (T0 to T0 + 110 s)."""
    bob = PatientFactory(name="bob")
    readings_create(bob, 23)
    return bob
