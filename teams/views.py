from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from teams.auth import TeamAuth


class TeamView(APIView):
    """The team and key behind the presented read key."""

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
