"""The staff counter under /staff/: member pages from `members`, points pages from `rewards`."""

from django.urls import path

from members import staff_views as member_views
from rewards import staff_views as reward_views

app_name = "staff"

urlpatterns = [
    path("", member_views.member_find, name="find"),
    path("shift/", member_views.shift, name="shift"),
    path("members/<str:member_number>/", reward_views.member_panel, name="member"),
]
