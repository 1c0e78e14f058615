"""Campaigns: segments, targeted and scheduled offers, lifecycle triggers, control groups.

May import `members` and `rewards` (and writes to them only through their `services`).
Never imports `referrals`, its sibling, nor `analytics`.
"""
