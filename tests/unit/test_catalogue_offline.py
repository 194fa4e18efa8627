"""The offline validation (used by `patchwarden plan` and the operator) rejects
every object of the catalogue that the API server rejects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from patchwarden.api import ManagedSystem, UpdateRequest
from tests.catalogue import CATALOGUE, REQUEST, SYSTEM, Bad


def test_the_catalogue_bases_are_valid() -> None:
    ManagedSystem.model_validate(SYSTEM)
    UpdateRequest.model_validate(REQUEST)


@pytest.mark.parametrize("bad", [b for b in CATALOGUE if b.offline], ids=lambda b: b.name)
def test_offline_validation_rejects(bad: Bad) -> None:
    model = ManagedSystem if bad.base is SYSTEM else UpdateRequest
    with pytest.raises(ValidationError):
        model.model_validate(bad.object())
