"""``GET /dashboard/`` (SPEC 9): one static page; everything else happens in the browser,
with the pasted read key, against the public API and websocket."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from taps_project.errors import get_only
from teams.models import time_zone_names

# The page loads only its own script and style and talks only to this origin (REST and
# websocket); the key it holds cannot be sent anywhere else by injected markup.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@get_only
def dashboard(request: HttpRequest) -> HttpResponse:
    # The zones the API takes, by their current IANA names: the browser's own list
    # (Intl.supportedValuesOf) has ICU's older ones, Asia/Calcutta but not Asia/Kolkata.
    zones = sorted(time_zone_names() - {"UTC"})
    response = render(request, "analytics/dashboard.html", {"zones": zones})
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    # The page is the same for everyone; the key never reaches the server in the URL.
    response["Referrer-Policy"] = "no-referrer"
    return response
