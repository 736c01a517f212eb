"""Django's ASGI handler, with the middleware chain run synchronously in one hop.

Django's own ``ASGIHandler`` builds the middleware chain in async mode. Every
``MiddlewareMixin`` middleware then runs each of its ``process_request``,
``process_view`` and ``process_response`` methods through ``sync_to_async``, and the
sync-only WhiteNoise middleware adds an ``async_to_sync`` back; the view itself is sync
(DRF) and takes one more hop. That is about fifteen handoffs between the event loop and
the request's thread for ``GET /v1/team``, and they, not the view, were most of the
worker's CPU per request (measured in the commit that added this module).

Every middleware and view here is synchronous, so this handler builds the chain as
WSGI would and runs all of it, view included, in the request's thread with one
``sync_to_async`` call. The request still has a thread of its own
(``ThreadSensitiveContext``, as in Django), so database connections and everything else
thread-bound behave exactly as before; only the number of handoffs changes.
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # BaseHandler.get_response sets the urlconf, runs the chain, adds request.close
        # to the response's closers and logs 4xx/5xx answers, as get_response_async does.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_asgi_application() -> SyncChainASGIHandler:
    """Like ``django.core.asgi.get_asgi_application``, with the one-hop handler."""
    import django

    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
