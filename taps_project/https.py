"""The redirect to HTTPS (``TAPS_HTTPS``), answered in JSON like every other answer."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.security import SecurityMiddleware


class JSONSecureRedirectMiddleware:
    """``SecurityMiddleware``'s redirect of plain HTTP, with a JSON body, and 308 rather
    than 301 for methods other than GET and HEAD: clients turn a POST redirected by 301
    into a GET without its body, so a batch of taps would be lost on the way.

    Placed before ``SecurityMiddleware``, which stays in ``MIDDLEWARE`` for its headers
    (``check --deploy`` looks for it by name) and then meets no request to redirect.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.security = SecurityMiddleware(get_response)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        redirect = self.security.process_request(request)
        if redirect is None:
            return self.get_response(request)
        location = redirect["Location"]
        answer = JsonResponse(
            {"detail": f"This service answers over HTTPS only; send the request to {location}"},
            status=301 if request.method in {"GET", "HEAD"} else 308,
        )
        answer["Location"] = location
        return answer
