"""Django's ASGI handler, with the middleware chain run synchronously in one hop, on a
pool of request threads.

Django's own ``ASGIHandler`` builds the middleware chain in async mode. Every
``MiddlewareMixin`` middleware then runs each of its ``process_request``,
``process_view`` and ``process_response`` methods through ``sync_to_async``, and the
sync-only WhiteNoise middleware adds an ``async_to_sync`` back; the view itself is sync
(DRF) and takes one more hop. That is about fifteen handoffs between the event loop and
the request's thread for ``GET /v1/team``, and they, not the view, were most of the
worker's CPU per request (measured in the commit that added this module).

Every middleware and view here is synchronous, so this handler builds the chain as
WSGI would and runs all of it, view included, in one call on a request thread. Django
also starts a new thread for every request (``ThreadSensitiveContext``) and hops to it
three more times (``request_started``, the response's ``close``); here a request's
signals, chain and ``close`` run in one call on a thread of a fixed pool, as under a
threaded WSGI server. Database connections are per thread and go back to the pool when
``request_finished`` closes them, in the thread that used them; there are
``TAPS_REQUEST_THREADS`` threads, fewer than the database pool has connections.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.threads = ThreadPoolExecutor(
            max_workers=settings.TAPS_REQUEST_THREADS, thread_name_prefix="request"
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves only HTTP over ASGI, not {scope['type']!r}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            await self.answer(scope, body_file, send)
        finally:
            body_file.close()

    async def answer(self, scope: dict[str, Any], body_file: Any, send: Any) -> None:
        request, refusal = self.create_request(scope, body_file)
        if request is None:
            assert refusal is not None  # create_request gives one or the other
            response = refusal
        else:
            response = await self.in_thread(self.respond, request)
        await self.send_response(response, send)
        if request is None or response.streaming:
            await self.in_thread(response.close)

    def respond(self, request: ASGIRequest) -> HttpResponseBase:
        """Everything a request does in Django, in the thread that calls this."""
        signals.request_started.send(sender=self.__class__, scope=request.scope)
        return self.respond_started(request)

    def respond_started(self, request: ASGIRequest) -> HttpResponseBase:
        """``respond`` once ``request_started`` has been sent."""
        # BaseHandler.get_response sets the urlconf, runs the chain, adds request.close
        # to the response's closers and logs 4xx/5xx answers, as get_response_async does.
        response = self.get_response(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming:
            # Its content is in memory: finish the request (request_finished) here, in
            # the thread whose database connection it releases.
            response.close()
        return response

    async def in_thread(self, function: Any, *args: Any) -> Any:
        return await sync_to_async(function, thread_sensitive=False, executor=self.threads)(*args)


def get_asgi_application() -> SyncChainASGIHandler:
    """Like ``django.core.asgi.get_asgi_application``, with the one-hop handler that also
    replays repeated analytics answers (``analytics.shortcut``)."""
    import django

    django.setup(set_prefix=False)
    from analytics.shortcut import ReplayingASGIHandler

    return ReplayingASGIHandler()
