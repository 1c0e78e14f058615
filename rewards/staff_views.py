"""The staff counter's pages about a member's points: the member panel and what staff do there."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from members import access
from members.models import Member
from rewards import selectors


@access.staff_view
def member_panel(request: HttpRequest, member_number: str) -> HttpResponse:
    """Show the member at the counter: points, tier and progress, vouchers, stamp cards, recent history."""
    member = get_object_or_404(Member, member_number=member_number)
    context = {"member": member, **selectors.member_panel(member)}
    template = "staff/member.html#balance" if request.htmx else "staff/member.html"  # type: ignore[attr-defined]
    response = TemplateResponse(request, template, context)
    response["Vary"] = "HX-Request"
    return response
