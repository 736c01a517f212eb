"""GET /dashboard/ (SPEC 9): the page itself; tests/test_dashboard_browser.py drives it."""

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_dashboard_is_served_with_its_script_and_a_strict_policy(client: Client) -> None:
    response = client.get("/dashboard/")

    assert response.status_code == 200
    assert b"dashboard.js" in response.content
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "no-referrer"


@pytest.mark.django_db
def test_the_dashboard_script_is_served_without_collectstatic(client: Client) -> None:
    response = client.get("/static/analytics/dashboard.js")

    assert response.status_code == 200
