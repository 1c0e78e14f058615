"""Rewards: the programme and its points.

Owns the programme rules (versioned, so a purchase is judged by the rules in force when it
happened; each process keeps a snapshot of them, `config.py`), terms and conditions, purchases
and returns, and the points ledger: append-only entries, earn lots with pending and expiry dates,
and each member's cached balances; tiers
(`tiers.py`), the reward catalog with redemptions and vouchers (`catalog.py`), stamp cards
(`stamps.py`), the programme clock (`clock.py`, `lifecycle.py`, `tasks.py`), history imports
from another system (`imports.py`, `bulk.py`; uploads run on a worker), and the staff
counter's pages about points (`staff_views.py`: the member panel, sales, returns, rewards,
vouchers, adjustments, the shift summary).

May import `members`. Higher apps (referrals, campaigns, analytics) write here only through
`rewards.services` and react to purchases and returns through `rewards.hooks`.
"""
