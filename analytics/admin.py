from functools import cached_property
from typing import cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest

from analytics.models import TapRecord


class CappedCountPaginator(Paginator):
    """Counts at most ``CAP`` + 1 rows: an exact count of millions of taps reads them all
    (3 s at 10M), and nobody pages that far; filtering by team narrows the list."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        taps = cast(QuerySet[TapRecord], self.object_list)
        return taps[: self.CAP + 1].count()


@admin.register(TapRecord)
class TapAdmin(admin.ModelAdmin):
    """Read-only list of raw taps; taps enter only through the loader and the ingest API."""

    list_display = ["tap_id", "team", "tag", "count", "created_at"]
    list_display_links = None
    list_filter = ["team"]
    search_fields = ["=tag__uid"]
    list_select_related = ["team"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    # Newest first within a team, read backwards from the (team_id, created_at) index
    # rather than by sorting every tap.
    ordering = ["-team_id", "-created_at"]

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> None:
        # A tap id is unique only within its team, so it cannot name a page; the list
        # shows every field.
        return None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
