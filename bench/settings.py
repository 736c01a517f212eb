"""The project's settings plus the baseline route (bench/urls.py); the whole benchmark
run is served with ``DJANGO_SETTINGS_MODULE=bench.settings``."""

from taps_project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
