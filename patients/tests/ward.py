"""The ward list as the API serves it, and as it would build it without the snapshot and the
fast paths: what the tests of both hold equal."""

from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from core.renderers import FastJSONRenderer
from patients.models import Patient, PatientTile
from vitals.patient_apis import PatientViewSet
from vitals.patient_selectors import patient_list
from vitals.patient_serializers import PatientSerializer
from vitals.serializers import OpenAlarmSerializer
from vitals.tile_services import patient_tile_pieces, tile_key


def ward_fast_and_slow(client: APIClient, monkeypatch, params: dict | None = None):
    """(the ward list's bytes, the bytes of DRF's walk over the declared fields and its
    JSONRenderer without the snapshot) for the same request."""
    fast = client.get("/api/patients/", params or {})
    with monkeypatch.context() as walk:
        walk.setattr(PatientViewSet, "snapshot", False)
        walk.setattr(
            PatientSerializer, "to_representation", serializers.Serializer.to_representation
        )
        walk.setattr(
            OpenAlarmSerializer, "to_representation", serializers.Serializer.to_representation
        )
        walk.setattr(FastJSONRenderer, "render", JSONRenderer.render)
        slow = client.get("/api/patients/", params or {})
    assert fast.status_code == slow.status_code == 200
    return fast.content, slow.content


def tiles_stale() -> list[str]:
    """The names of the patients whose tile is missing, of another key, or not what a rebuild
    would write now: [] when the snapshot holds every patient as the database has them."""
    tiles = {t.patient_id: t for t in PatientTile.objects.all()}
    key = tile_key()
    stale = []
    for patient in patient_list().order_by("pk"):
        tile = tiles.get(patient.pk)
        pieces = (key, *patient_tile_pieces(patient))
        if tile is None or (tile.key, tile.head, tile.middle, tile.tail) != pieces:
            stale.append(patient.name)
    return stale


def ward_current(client: APIClient, monkeypatch, params: dict | None = None) -> list[dict]:
    """The ward list's patients, after checking that every tile is current (so the answer
    came from the snapshot) and that the answer is the slow path's, byte for byte, in every
    ordering."""
    stale = tiles_stale()
    assert stale == [], f"stale tiles: {stale}"
    assert Patient.objects.count() == PatientTile.objects.count()
    for ordering in ("name", "-news2"):
        fast, slow = ward_fast_and_slow(
            client, monkeypatch, {**(params or {}), "ordering": ordering}
        )
        assert fast == slow
    return client.get("/api/patients/", params or {}).json()["results"]
