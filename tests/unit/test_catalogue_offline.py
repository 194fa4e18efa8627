"""The offline validation (used by `patchwarden plan` and the operator) rejects
every object of the catalogue that the API server rejects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from patchwarden.api import ManagedSystem, UpdateRequest
from patchwarden.api.catalog import ReleaseCatalog
from tests.catalogue import CATALOG, CATALOGUE, REQUEST, SYSTEM, Bad


def test_the_catalogue_bases_are_valid() -> None:
    ManagedSystem.model_validate(SYSTEM)
    UpdateRequest.model_validate(REQUEST)
    ReleaseCatalog.model_validate(CATALOG)


@pytest.mark.parametrize("bad", [b for b in CATALOGUE if b.offline], ids=lambda b: b.name)
def test_offline_validation_rejects(bad: Bad) -> None:
    model = {"ManagedSystem": ManagedSystem, "UpdateRequest": UpdateRequest}.get(
        bad.base["kind"], ReleaseCatalog
    )
    with pytest.raises(ValidationError):
        model.model_validate(bad.object())
