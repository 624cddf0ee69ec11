"""The FHIR facade, mounted at /fhir/ by icu/urls.py (outside API_PREFIX: FHIR clients are
given a FHIR base URL, `http://host/fhir`)."""

from django.urls import path, re_path

from exports.apis import FhirObservationSearchView, fhir_metadata, fhir_unknown_path

app_name = "fhir"

urlpatterns = [
    # With or without a trailing slash: FHIR URLs have none, some clients add one.
    re_path(r"^metadata/?$", fhir_metadata, name="metadata"),
    # With a slash too, as some clients send: the same search under the same name (its access
    # rule), left out of the schema; defined first, so that reverse() gives the one without.
    path(
        "Observation/",
        FhirObservationSearchView.as_view(schema=None),
        name="observation-search",
    ),
    path("Observation", FhirObservationSearchView.as_view(), name="observation-search"),
    # Last: everything else under /fhir/ is an OperationOutcome, never Django's HTML 404.
    re_path(r"^(?P<url>.*)$", fhir_unknown_path, name="unknown"),
]
