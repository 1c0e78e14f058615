"""Rewards: the programme and its points.

Owns the programme rules (versioned, so a purchase is judged by the rules in force when it
happened), terms and conditions, purchases and returns, and the points ledger: append-only
entries, earn lots with pending and expiry dates, and each member's cached balances; tiers
(`tiers.py`), the reward catalog with redemptions and vouchers (`catalog.py`), stamp cards
(`stamps.py`), and the programme clock (`clock.py`, `lifecycle.py`, `tasks.py`).

May import `members`. Higher apps (referrals, campaigns, analytics) write here only through
`rewards.services` and react to purchases and returns through `rewards.hooks`.
"""
