"""Template context every page gets from `members`."""

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from members.models import Member, Notification


def _unread(request: HttpRequest) -> int:
    member: Member | None = getattr(request, "member", None)
    unread = Notification.objects.filter(read_at__isnull=True)
    if member is not None:
        return unread.filter(member=member).count()
    return unread.filter(member__user=request.user, member__status=Member.Status.ACTIVE).count()


def inbox(request: HttpRequest) -> dict[str, object]:
    """Give a logged-in member's unread message count as `inbox_unread`, counted (one query) only if a page shows it."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"inbox_unread": SimpleLazyObject(lambda: _unread(request))}
