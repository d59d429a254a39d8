"""The API's edge: every route answers OPTIONS and HEAD without a server error, and a bounded
parser's ParseError becomes a 400 in the API's error shape, while other exceptions stay 500s."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, path
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from core.parsing import parse_datetime

pytestmark = pytest.mark.django_db


def _routes(patterns=None, prefix=""):
    """Every route of the project without path parameters (admin's model pages aside)."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if route.startswith("admin/") and route != "admin/":
                continue
            yield from _routes(pattern.url_patterns, prefix + route)
        elif isinstance(pattern, URLPattern) and "<" not in route and "(" not in route and "^" not in route:
            yield "/" + prefix + route


ROUTES = sorted(set(_routes()))


def test_the_route_list_covers_the_api():
    assert {"/api/docs/", "/api/schema/", "/api/v1/events", "/api/v1/usage", "/api/v1/stripe/webhook"} <= set(
        ROUTES
    )


@pytest.mark.parametrize("method", ["options", "head"])
@pytest.mark.parametrize("route", ROUTES)
def test_options_and_head_on_every_route_are_not_a_server_error(client, tenant_client, route, method):
    for caller in (client, tenant_client):
        response = getattr(caller, method)(route)
        assert response.status_code < 500, (route, method, response.status_code)


def test_options_on_the_api_docs_answers_the_allowed_methods(client):
    response = client.options("/api/docs/")
    assert response.status_code == 200
    assert "GET" in response["Allow"]


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def _drf_view(request):
    parse_datetime(request.query_params.get("at", ""), what="at")


def _plain_view(request):
    parse_datetime(request.GET.get("at", ""), what="at")


def _buggy_view(request):
    raise ValueError("a bug, not bad input")


urlpatterns = [
    path("api/test/drf", _drf_view),
    path("api/test/plain", _plain_view),
    path("api/test/bug", _buggy_view),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("url", ["/api/test/drf", "/api/test/plain"])
def test_a_parse_error_escaping_a_view_is_a_400_in_the_api_error_shape(client, url):
    response = client.get(url, {"at": "9999-12-31T23:00:00-05:00"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid", "message": "at must be between 2000-01-01 and 2100-12-31"}
    }


@pytest.mark.urls(__name__)
def test_any_other_exception_stays_a_server_error(client):
    client.raise_request_exception = False
    assert client.get("/api/test/bug").status_code == 500


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key abc\x00def.secret",
        "Api-Key ab\x7f.secret",
        "Api-Key é.secret",
        "Api-Key " + "a" * 5000 + ".b",
    ],
)
def test_a_garbage_api_key_is_a_401_not_a_server_error(client, tenant, header):
    response = client.get("/api/v1/tenant", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("authentication_failed", "not_authenticated")
