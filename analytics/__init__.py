"""Analytics: programme KPIs, points liability, 80/20, RFM, cohorts, loyalty stages, ROI.

Reads every app; nothing imports it.
"""
