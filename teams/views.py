from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from taps_project.parameters import OneValuePerParameterMixin
from teams.auth import TeamAuth


class TeamView(OneValuePerParameterMixin, APIView):
    """The team and key behind the presented read key."""

    @extend_schema(
        operation_id="team",
        summary="The team and key behind the presented read key",
        responses={
            200: inline_serializer(
                "TeamAndKey",
                {
                    "team": inline_serializer(
                        "TeamDetail",
                        {
                            "id": serializers.IntegerField(),
                            "name": serializers.CharField(),
                            "time_zone": serializers.CharField(),
                        },
                    ),
                    "key": inline_serializer(
                        "KeyDetail",
                        {
                            "name": serializers.CharField(),
                            "prefix": serializers.CharField(),
                            "scope": serializers.CharField(),
                            "expires": serializers.DateTimeField(allow_null=True),
                        },
                    ),
                },
            ),
            401: OpenApiResponse(description="Missing, unknown, revoked or expired key."),
        },
    )
    def get(self, request: Request) -> Response:
        auth: TeamAuth = request.auth
        team = auth.team
        return Response(
            {
                "team": {"id": team.id, "name": team.name, "time_zone": team.time_zone},
                "key": {
                    "name": auth.key.name,
                    "prefix": auth.key.prefix,
                    "scope": auth.scope,
                    "expires": auth.key.expiry_date,
                },
            }
        )
