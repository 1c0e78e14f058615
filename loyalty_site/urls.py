from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from loyalty_site import views
from members import converters  # noqa: F401 - registers member_number
from referrals import api as referral_api
from referrals import portal_views as referral_views

admin.site.site_header = _("Loyalty programme administration")
admin.site.site_title = _("Loyalty admin")
admin.site.index_title = _("Programme")

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("rewards.api.urls")),
    # Served here, not in rewards.api.urls: rewards never imports referrals.
    path(
        "api/v1/members/<member_number:member_number>/referrals",
        referral_api.MemberReferralsApi.as_view(),
        name="api-member-referrals",
    ),
    path("staff/", include("loyalty_site.staff_urls")),
    path("me/", include("loyalty_site.portal_urls")),
    # A member's invitation link, shared with friends: public.
    path("join/<str:code>/", referral_views.join_landing, name="referral_join"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    *static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT),  # only when DEBUG
]

handler404 = "loyalty_site.views.not_found"
