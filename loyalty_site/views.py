from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.views import defaults


def home(request: HttpRequest) -> HttpResponse:
    return TemplateResponse(request, "home.html")


def healthz(request: HttpRequest) -> HttpResponse:
    """Answer a load balancer: the process is up and reaches the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Answer an unknown API address in the API's own error format, and any other with the page."""
    if request.path.startswith("/api/"):
        body = {"type": "/api/problems/not-found", "title": _("Not found."), "status": 404, "detail": _("Not found.")}
        return JsonResponse(body, status=404, content_type="application/problem+json")
    return defaults.page_not_found(request, exception)  # type: ignore[arg-type]
