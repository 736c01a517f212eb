from django.contrib import admin
from django.urls import path, reverse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.request import Request

from analytics.dashboard import dashboard
from analytics.ingest_api import TapIngestView
from analytics.views import SeedTapAnalyticsView, TapAnalyticsViewSet, UsageView
from taps_project.health import healthz
from taps_project.negotiation import JSONErrorsMixin
from taps_project.parameters import OneValuePerParameterMixin
from teams.views import TeamView


class SchemaView(OneValuePerParameterMixin, JSONErrorsMixin, SpectacularAPIView):
    http_method_names = ["get", "head"]

    def _get_version_parameter(self, request: Request) -> None:
        # The API has one version. drf-spectacular would put ``?version=`` into the
        # Content-Disposition header as it came: a CR or NUL there was a 500 or a
        # dropped connection.
        return None


class DocsView(OneValuePerParameterMixin, JSONErrorsMixin, SpectacularSwaggerView):
    # OPTIONS would describe the view with its HTML renderer, which has no template for
    # that: a 500.
    http_method_names = ["get", "head"]

    def _get_schema_url(self, request: Request) -> str:
        # Without the page's own ``lang`` and ``version``, which the schema ignores.
        return reverse("schema")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/analytics/taps", TapAnalyticsViewSet.as_view({"get": "list"}), name="analytics-taps"),
    path("v1/api/tap/analytics", SeedTapAnalyticsView.as_view(), name="seed-tap-analytics"),
    path("v1/usage", UsageView.as_view(), name="usage"),
    path("v1/team", TeamView.as_view(), name="team"),
    path("v1/taps", TapIngestView.as_view(), name="taps-ingest"),
    path("v1/schema", SchemaView.as_view(), name="schema"),
    path("v1/docs", DocsView.as_view(url_name="schema"), name="docs"),
    path("healthz", healthz, name="healthz"),
    path("dashboard/", dashboard, name="dashboard"),
]

handler400 = "taps_project.errors.bad_request"
handler403 = "taps_project.errors.permission_denied"
handler404 = "taps_project.errors.not_found"
handler500 = "taps_project.errors.server_error"
