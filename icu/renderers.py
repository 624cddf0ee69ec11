"""The browsable API's renderer: DRF's, with a template that runs under the
Content-Security-Policy (icu/templates/icu/browsable_api.html)."""

from rest_framework.renderers import BrowsableAPIRenderer as DrfBrowsableAPIRenderer


class BrowsableAPIRenderer(DrfBrowsableAPIRenderer):
    template = "icu/browsable_api.html"
