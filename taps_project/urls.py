from django.contrib import admin
from django.urls import path

from analytics.dashboard import dashboard
from analytics.ingest_api import TapIngestView
from taps_project.health import healthz
from teams.views import TeamView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/team", TeamView.as_view(), name="team"),
    path("v1/taps", TapIngestView.as_view(), name="taps-ingest"),
    path("healthz", healthz, name="healthz"),
    path("dashboard/", dashboard, name="dashboard"),
]

handler400 = "taps_project.errors.bad_request"
handler403 = "taps_project.errors.permission_denied"
handler404 = "taps_project.errors.not_found"
handler500 = "taps_project.errors.server_error"
