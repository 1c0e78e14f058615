"""Referrals: codes and links, the friend's qualifying purchase, two-sided rewards, fraud guards.

May import `members` and `rewards` (and writes to them only through their `services`).
Never imports `campaigns`, its sibling, nor `analytics`. Reacts to new members through
`members.hooks` and to purchases and returns through `rewards.hooks`, with handlers registered
in `loyalty_site.apps`; shows its data on members' and rewards' pages through its template tags.
"""
