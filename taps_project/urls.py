from django.contrib import admin
from django.urls import path

from teams.views import TeamView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/team", TeamView.as_view(), name="team"),
]

handler400 = "taps_project.errors.bad_request"
handler403 = "taps_project.errors.permission_denied"
handler404 = "taps_project.errors.not_found"
handler500 = "taps_project.errors.server_error"
