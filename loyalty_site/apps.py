from django.apps import AppConfig


class LoyaltySiteConfig(AppConfig):
    name = "loyalty_site"
    verbose_name = "Loyalty site"

    def ready(self) -> None:
        from members import hooks as member_hooks
        from referrals import services as referrals
        from rewards import hooks as reward_hooks

        # The composition root: higher apps react to members and purchases without the lower apps importing them.
        member_hooks.on_member_enrolled(referrals.on_member_enrolled)
        reward_hooks.on_purchases_recorded(referrals.on_purchases)
        reward_hooks.on_return_recorded(referrals.on_return)
