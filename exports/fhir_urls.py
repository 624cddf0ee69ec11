"""The FHIR facade, mounted at /fhir/ by icu/urls.py (outside API_PREFIX: FHIR clients are
given a FHIR base URL, `http://host/fhir`)."""

from django.urls import path

from exports.apis import FhirObservationSearchView

app_name = "fhir"

urlpatterns = [
    path("Observation", FhirObservationSearchView.as_view(), name="observation-search"),
]
