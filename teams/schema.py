"""How OpenAPI describes the team key (drf-spectacular finds this on import)."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TeamAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "teams.auth.TeamAPIKeyAuthentication"
    name = "TeamApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Api-Key",
            "description": "Your team's API key (Authorization: Api-Key <key> works too).",
        }
