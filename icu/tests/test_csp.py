"""The Content-Security-Policy of every HTML page: exactly the policy, and no inline script or
style the policy would not run (each carries the response's nonce). That the pages then run in
a browser without one violation: ward/tests/test_browser.py."""

import re

import pytest
from django.test import Client

from patients.tests.factories import PatientFactory

# The policy, directive by directive ("NONCE": the response's nonce, on pages with an inline
# script or style). django-csp writes the directives in no fixed order.
POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "NONCE"],
    "style-src": ["'self'", "NONCE"],
    "style-src-attr": ["'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
NONCE = re.compile(r"'nonce-([A-Za-z0-9+/]+={0,2})'")
# Inline code: a <script> without src that is not data (type="application/json", importmap is
# code), and <style> elements.
INLINE = re.compile(
    r"<(script|style)\b((?:(?!\bsrc=)[^>])*)>(?!\s*</\1>)",
    re.IGNORECASE,
)

# Inline event handlers (onclick=...) and javascript: URLs: inline script no nonce can allow.
HANDLERS = re.compile(r"<[^>]*\son[a-z]+\s*=[^>]*>|javascript:", re.IGNORECASE)


def policy(response) -> tuple[dict[str, list[str]], str | None]:
    """The response's policy as {directive: sources} (its nonce as "NONCE"), and the nonce."""
    header = response["Content-Security-Policy"]
    nonces = set(NONCE.findall(header))
    assert len(nonces) <= 1, header
    directives = {}
    for directive in header.split(";"):
        name, *sources = directive.split()
        directives[name] = [NONCE.sub("NONCE", source) for source in sources]
    return directives, next(iter(nonces), None)


def inline_elements(html: str) -> list[tuple[str, str]]:
    """(tag, attributes) of every inline script (but JSON data) and style element."""
    return [
        (tag.lower(), attributes)
        for tag, attributes in INLINE.findall(html)
        if 'type="application/json"' not in attributes
    ]


PAGES = [
    # (name, who is logged in, path, inline elements the page needs)
    ("ward", "nurse", "/", 1),
    ("patient", "nurse", "/patients/{uuid}/", 1),
    ("central station login", None, "/login/", 1),
    ("admin login", None, "/admin/login/", 0),
    ("admin index", "chief", "/admin/", 0),
    ("admin change list", "chief", "/admin/patients/patient/", 0),
    ("browsable API", "nurse", "/api/patients/", 1),
    ("browsable API login", None, "/api/auth/login/", 0),
    ("Swagger UI", "nurse", "/api/docs/", 1),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "path", "inline"), [page[1:] for page in PAGES], ids=[page[0] for page in PAGES]
)
def test_every_html_page_has_the_strict_policy_and_no_inline_code_without_its_nonce(
    client: Client, user, staff_user, who, path, inline
):
    if who:
        client.force_login({"nurse": user, "chief": staff_user}[who])
    patient = PatientFactory()

    response = client.get(path.format(uuid=patient.uuid), HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    directives, nonce = policy(response)
    html = response.content.decode()
    elements = inline_elements(html)
    assert len(elements) == inline, elements
    assert HANDLERS.findall(html) == []
    expected = {
        name: [source for source in sources if nonce or source != "NONCE"]
        for name, sources in POLICY.items()
    }
    assert directives == expected
    # A page with inline code has a nonce, and every inline element carries it.
    assert bool(nonce) == bool(inline)
    for _tag, attributes in elements:
        assert f'nonce="{nonce}"' in attributes, attributes


@pytest.mark.django_db
def test_each_response_has_a_nonce_of_its_own(client: Client) -> None:
    first, second = client.get("/login/"), client.get("/login/")

    assert policy(first)[1] != policy(second)[1]
    assert len(policy(first)[1]) >= 22  # 128 random bits, base64
