from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MembersConfig(AppConfig):
    name = "members"
    verbose_name = _("Members")

    def ready(self) -> None:
        from allauth.account.signals import user_logged_in

        from members import access

        user_logged_in.connect(access.language_on_login, dispatch_uid="members.language_on_login")
