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

import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

from taps_project.parsers import MAX_BODY_BYTES


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

    async def read_body(self, receive: Any) -> Any:
        """The request body, of which at most one byte more than any parser accepts is
        kept (``MAX_BODY_BYTES``): Django's own kept all of it, so a client could make a
        worker spool gigabytes to disk that the parser then refused with a 413."""
        body_file = tempfile.SpooledTemporaryFile(
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        room = MAX_BODY_BYTES + 1
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            chunk = message.get("body", b"")
            if room > 0 and chunk:
                body_file.write(chunk[:room])
                room -= len(chunk)
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file

    def create_request(
        self, scope: Mapping[str, Any], body_file: IO[bytes]
    ) -> tuple[ASGIRequest, None] | tuple[None, HttpResponseBase]:
        """Django's request, with ``CONTENT_LENGTH`` set to the body read when the
        client sent it without one (``Transfer-Encoding: chunked``): DRF takes a request
        without it for one without a body."""
        created = super().create_request(scope, body_file)
        request = created[0]
        if request is not None and "CONTENT_LENGTH" not in request.META:
            size = body_file.seek(0, os.SEEK_END)
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        return created

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
