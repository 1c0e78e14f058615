"""The member portal under /me/: pages from `members` (identity, inbox, privacy) and `rewards` (points)."""

from django.urls import path

from members import converters  # noqa: F401 - registers voucher_code
from rewards import portal_views as reward_views

app_name = "portal"

urlpatterns = [
    path("", reward_views.home, name="home"),
    path("join/", reward_views.join, name="join"),
]
