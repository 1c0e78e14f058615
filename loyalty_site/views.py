from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.views import defaults

from members import access


def home(request: HttpRequest) -> HttpResponse:
    """Send a signed-in person where they work or where their points are; show everyone else the welcome."""
    if request.user.is_authenticated and not request.user.is_staff:
        return redirect("portal:home")
    if request.user.is_authenticated:
        # Head office (no store to work a shift in) goes to the administration, where its work is.
        return redirect("staff:find" if access.staff_stores(request.user).exists() else "admin:index")
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
