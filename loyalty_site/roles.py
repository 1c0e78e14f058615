"""Staff roles as groups with real permissions; `manage.py sync_roles` applies this table.

A role lists "app_label.codename" permissions; "app_label.*" means every permission of an app.
"""

VIEW_PROGRAMME = [
    "members.view_member",
    "members.view_store",
    "rewards.view_programme",
    "rewards.view_programmerules",
    "rewards.view_termsversion",
    "rewards.view_pointsaccount",
    "rewards.view_ledgerentry",
    "rewards.view_purchase",
    "rewards.view_return",
    "rewards.view_tier",
    "rewards.view_membertier",
    "rewards.view_reward",
    "rewards.view_redemption",
    "rewards.view_voucher",
    "rewards.view_stampprogramme",
    "rewards.view_stampcard",
]

CASHIER = [
    *VIEW_PROGRAMME,
    "members.add_member",
    "members.change_member",
    "rewards.add_purchase",
    "rewards.add_return",
    "rewards.add_redemption",  # redeem a reward for the member at the counter
    "rewards.change_voucher",  # mark a voucher used
]

STORE_MANAGER = [
    *CASHIER,
    "members.view_consentrecord",
    "rewards.view_pointslot",
    "rewards.adjust_points",
    "rewards.change_redemption",  # cancel a redemption, points and stock back
    "rewards.view_tierchange",
]

MARKETER = [
    *VIEW_PROGRAMME,
    "members.view_consentrecord",
    "rewards.view_pointslot",
    "rewards.view_termsacceptance",
    "rewards.add_programmerules",
    "rewards.change_programmerules",
    "rewards.add_termsversion",
    "rewards.change_termsversion",
    "rewards.add_termstext",
    "rewards.change_termstext",
    "rewards.view_termstext",
    "rewards.add_tier",
    "rewards.change_tier",
    "rewards.view_tierchange",
    "rewards.add_reward",
    "rewards.change_reward",
    "rewards.add_stampprogramme",
    "rewards.change_stampprogramme",
    "rewards.view_stampevent",
    "rewards.view_jobrun",
    "members.view_notification",
    "referrals.*",
    "campaigns.*",
    "analytics.*",
]

PROGRAMME_ADMIN = [
    "members.*",
    "rewards.*",
    "referrals.*",
    "campaigns.*",
    "analytics.*",
    "auth.view_group",
    "django_celery_beat.*",
]

ROLES: dict[str, list[str]] = {
    "Cashier": CASHIER,
    "Store manager": STORE_MANAGER,
    "Marketer": MARKETER,
    "Programme admin": PROGRAMME_ADMIN,
}
