"""Starting a staff member's shift in a test, as the shift page would."""

from members.access import SHIFT_STORE


def counter_login(client, user, store):  # type: ignore[no-untyped-def]
    """Log a staff member in with their shift started at the store; return the client."""
    client.force_login(user)
    session = client.session
    session[SHIFT_STORE] = store.pk
    session.save()
    return client
