"""A query parameter given twice is a 400 on every endpoint of the API (SPEC 6); only
``tag`` of ``GET /v1/analytics/taps`` may repeat. Which of two values a client meant is
not ours to guess."""

from collections.abc import Collection
from typing import Any

from django.http import QueryDict
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


def repeated_parameters(
    params: QueryDict, repeatable: Collection[str] = ()
) -> dict[str, list[str]]:
    """An error for each parameter given more than once, keyed by its name."""
    return {
        name[:64]: [f"Give {name[:64]} once; it was given {len(values)} times."]
        for name, values in params.lists()
        if len(values) > 1 and name not in repeatable
    }


class OneValuePerParameterMixin:
    """For API views: refuses repeated query parameters once the request is
    authenticated and its rate-limit slot counted, like any other bad input."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        errors = repeated_parameters(request.query_params)
        if errors:
            raise ValidationError(errors)
