"""The API's authentication: DRF's token and session ones, with the user's permissions read in one
query (core.selectors: token_get, user_permissions_load)."""

import drf_spectacular.authentication
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

# core.selectors (models) is imported where it is used: DRF imports this module with its
# settings, which `rest_framework.views` reads at import, before Django's apps are loaded (a
# script importing core.exceptions without django.setup(): the emulator's, a benchmark's).


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's TokenAuthentication (the same header, answers and messages), one query instead of
    three for a user of a role: the token, its user and the user's permissions together."""

    def authenticate_credentials(self, key: str):
        from core.selectors import token_get

        token = token_get(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's SessionAuthentication (the central station's pages, the browsable API), the
    signed-in user's permissions read in one query instead of two (user_permissions_load)."""

    def authenticate(self, request):
        from core.selectors import user_permissions_load

        authenticated = super().authenticate(request)
        if authenticated is not None:
            user_permissions_load(user=authenticated[0])
        return authenticated


class SessionScheme(drf_spectacular.authentication.SessionScheme):
    """The schema's account of SessionAuthentication above: drf-spectacular's cookie scheme
    (its own matches DRF's class only, where the token's matches subclasses too)."""

    target_class = "core.authentication.SessionAuthentication"
