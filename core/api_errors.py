"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?}}.

DRF's exceptions, Django's 404/500 on /api/ paths and anything else an API client can meet all
answer in this shape, so a client parses one thing.
"""

from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core import parsing


def error_body(code: str, message: str, fields=None) -> dict:
    body = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return {"error": body}


def exception_handler(exc, context):
    if isinstance(exc, parsing.ParseError):
        # Outside text the bounded parser refused, wherever a view met it: the client's mistake,
        # answered 400 with the parser's message. Other exceptions are not guessed at: a bug stays a 500.
        return Response(error_body("invalid", str(exc)), status=400)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # Django turns it into a 500, which handler500 answers as JSON.
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "The request is invalid; see fields.", response.data)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.default_detail)
        response.data = error_body(code, str(detail))
    return response


def _wants_json(request) -> bool:
    return request.path.startswith("/api/")


def handler404(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "No such endpoint."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if _wants_json(request):
        return JsonResponse(error_body("server_error", "Internal server error."), status=500)
    from django.views.defaults import server_error

    return server_error(request)
