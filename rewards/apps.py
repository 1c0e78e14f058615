from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RewardsConfig(AppConfig):
    name = "rewards"
    verbose_name = _("Rewards")

    def ready(self) -> None:
        from rewards import config, hooks, lifecycle, stamps

        config.connect_signals()

        # Stamp cards and the points-earned message live in this app, so they listen here
        # rather than at the composition root.
        hooks.on_purchases_recorded(stamps.on_purchases)
        hooks.on_return_recorded(stamps.on_return)
        hooks.on_purchases_recorded(lifecycle.on_purchases)
