"""The REST API for tills and web shops (`/api/v1/`): members with their points, purchases, returns.

Thin DRF views: parse with an input serializer, call one service or selector, render with an
output serializer. Every write is idempotent; errors become problem+json in `loyalty_site.api`.
"""
