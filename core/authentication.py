"""The API's token authentication: DRF's, with the user's permissions read in the token's
query (core.selectors.token_get)."""

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from core.selectors import token_get


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's TokenAuthentication (the same header, answers and messages), one query instead of
    three for a user of a role: the token, its user and the user's permissions together."""

    def authenticate_credentials(self, key: str):
        token = token_get(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)
