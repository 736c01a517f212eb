"""DRF authentication and permission for team API keys (SPEC 5).

A key comes as ``X-Api-Key: <key>`` (the seed's header) or ``Authorization: Api-Key <key>``.
Authentication resolves it once to a ``TeamAuth`` on ``request.auth``; views say which
scope they need with ``required_scope``.
"""

from dataclasses import dataclass
from datetime import datetime

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from teams.keys import KeyRejected, ResolvedKey, read_key
from teams.models import Scope, Team, TeamAPIKey

AUTH_SCHEME = "Api-Key"


@dataclass(frozen=True)
class TeamAuth:
    key: TeamAPIKey
    # When the key was read, and the team's write version the same statement read then:
    # the instant a read answers ``as_of``, and the version its cached answer is under.
    read_at: datetime
    team_write_version: int

    @property
    def team(self) -> Team:
        return self.key.team

    @property
    def scope(self) -> str:
        return self.key.scope


def presented_key(request: Request) -> str | None:
    return key_in_headers(
        request.META.get("HTTP_X_API_KEY"), request.META.get("HTTP_AUTHORIZATION", "")
    )


def key_in_headers(x_api_key: str | None, authorization: str) -> str | None:
    """The key sent in ``X-Api-Key`` or, without that header, in ``Authorization``."""
    if x_api_key is not None:
        return x_api_key.strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == AUTH_SCHEME.lower():
        return credentials.strip()
    return None


class TeamAPIKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[None, TeamAuth] | None:
        plaintext = presented_key(request)
        if plaintext is None:
            return None
        if not plaintext:
            raise exceptions.AuthenticationFailed("The API key header is empty.")
        # Read already for this request from the same header (analytics.shortcut).
        found: ResolvedKey | None = getattr(request, "resolved_key", None)
        if found is None:
            try:
                found = read_key(plaintext)
            except KeyRejected as rejection:
                raise exceptions.AuthenticationFailed(str(rejection)) from None
        return None, TeamAuth(found.key, found.read_at, found.team_write_version)

    def authenticate_header(self, request: Request) -> str:
        return AUTH_SCHEME


class HasScope(BasePermission):
    """Needs a team key whose scope is the view's ``required_scope`` (default: read;
    None: any scope)."""

    def has_permission(self, request: Request, view: object) -> bool:
        auth = request.auth
        if not isinstance(auth, TeamAuth):
            raise exceptions.NotAuthenticated(
                "Send your team's API key in the X-Api-Key header "
                "(or as Authorization: Api-Key <key>)."
            )
        required = getattr(view, "required_scope", Scope.READ)
        if required is not None and auth.scope != required:
            raise exceptions.PermissionDenied(
                f"This key's scope is {str(auth.scope)!r}; "
                f"this endpoint needs a {str(required)!r} key."
            )
        return True
