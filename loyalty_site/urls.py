from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _

from loyalty_site import views

admin.site.site_header = _("Loyalty programme administration")
admin.site.site_title = _("Loyalty admin")
admin.site.index_title = _("Programme")

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
]
