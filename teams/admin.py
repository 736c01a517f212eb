from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import Model
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from analytics.models import Tap
from teams.keys import create_key
from teams.models import Tag, Team, TeamAPIKey
from teams.tags import move_tag


class NoDeleteOnceTappedAdmin(admin.ModelAdmin):
    """Teams and tags with taps are not deleted from the admin: its confirmation page would
    list every tap, and the taps are the customer's history."""

    actions = None
    tap_owner_field = ""

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is None or not super().has_delete_permission(request, obj):
            return False
        return not Tap.objects.filter(**{self.tap_owner_field: obj.pk}).exists()


@admin.register(Team)
class TeamAdmin(NoDeleteOnceTappedAdmin):
    list_display = ["id", "name", "time_zone", "created"]
    search_fields = ["name"]
    readonly_fields = ["created"]
    tap_owner_field = "team_id"


@admin.register(Tag)
class TagAdmin(NoDeleteOnceTappedAdmin):
    tap_owner_field = "tag_id"
    list_display = ["uid", "team", "created_at", "owner_since"]
    list_filter = ["team"]
    search_fields = ["uid"]
    list_select_related = ["team"]
    readonly_fields = ["owner_since"]

    def get_readonly_fields(self, request: HttpRequest, obj: Tag | None = None) -> list[str]:
        if obj is None:
            return self.readonly_fields
        return ["uid", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: Tag, form: Any, change: bool) -> None:
        if change and "team" in form.changed_data:
            new_team = obj.team
            obj.team_id = form.initial["team"]
            move_tag(obj, new_team)
            messages.info(
                request,
                f"Tag {obj.uid} now belongs to {new_team}; its earlier taps stay with "
                "the team that had it.",
            )
            return
        super().save_model(request, obj, form, change)


# The library registers its own key model, whose keys belong to no team: the API refuses
# every one, so issuing them would only mislead an operator.
admin.site.unregister(APIKey)


@admin.register(TeamAPIKey)
class TeamAPIKeyAdmin(APIKeyModelAdmin):
    # the library types these as fixed-length tuples
    list_display = (*APIKeyModelAdmin.list_display, "team", "scope")  # type: ignore[assignment]
    list_filter = ("team", "scope", "revoked", "created")  # type: ignore[assignment]
    list_select_related = ["team"]
    fields = ["team", "name", "scope", "expiry_date", "revoked", "prefix"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: Model | None = None
    ) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, cast(Model, obj)))
        if obj is not None:
            fields += ("team", "scope")
        return fields

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False
    ) -> None:
        if change:
            obj.save()
            return
        issued = create_key(obj.team, name=obj.name, scope=obj.scope, expires_at=obj.expiry_date)
        # The admin goes on with ``obj`` (log entry, redirect): make it the saved key.
        obj.pk = issued.api_key.pk
        obj.prefix = issued.api_key.prefix
        obj.hashed_key = issued.api_key.hashed_key
        obj.created = issued.api_key.created
        obj._state.adding = False
        obj._state.db = issued.api_key._state.db
        messages.warning(
            request,
            f"The API key for {obj.name} is: {issued.plaintext} — store it now: it is "
            "kept only hashed and will not be shown again.",
        )
