"""The browsable API's renderer: DRF's, with a template that runs under the
Content-Security-Policy (core/templates/core/browsable_api.html)."""

from rest_framework.renderers import BrowsableAPIRenderer as DrfBrowsableAPIRenderer


class BrowsableAPIRenderer(DrfBrowsableAPIRenderer):
    template = "core/browsable_api.html"
