"""The staff counter's member pages: choosing the shift's store, and finding a member."""

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from members import access, selectors


@require_http_methods(["GET", "POST"])
def shift(request: HttpRequest) -> HttpResponse:
    """Choose the store of this shift (once: every counter page then works for it)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not request.user.is_staff:
        raise PermissionDenied
    stores = access.staff_stores(request.user)  # type: ignore[arg-type]
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        target = ""
    if request.method == "POST" or (stores.count() == 1 and not access.shift_store(request)):
        store_id = request.POST.get("store") if request.method == "POST" else stores.get().pk
        access.shift_store_set(request, store_id)
        return redirect(target or "staff:find")
    context = {"stores": stores, "current": access.shift_store(request), "next": target}
    return TemplateResponse(request, "staff/shift.html", context)


@access.staff_view
def member_find(request: HttpRequest) -> HttpResponse:
    """One search box for a phone, e-mail, member number, scanned card or name; Enter on one match opens it."""
    query = request.GET.get("q", "")
    members = selectors.members_search(query)
    if query and len(members) == 1 and not request.htmx:  # type: ignore[attr-defined]
        return redirect("staff:member", member_number=members[0].member_number)
    template = "staff/find.html#results" if request.htmx else "staff/find.html"  # type: ignore[attr-defined]
    response = TemplateResponse(request, template, {"query": query, "members": members})
    response["Vary"] = "HX-Request"
    return response
