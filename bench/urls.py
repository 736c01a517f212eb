from django.urls import path

from bench.baseline import BaselineSeedView, BaselineTapsView
from taps_project.urls import handler400, handler403, handler404, handler500, urlpatterns

urlpatterns = [
    *urlpatterns,
    path("bench/baseline/taps", BaselineTapsView.as_view()),
    path("bench/baseline/seed", BaselineSeedView.as_view()),
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
