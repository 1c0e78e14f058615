from django.db import migrations

# Checked rows of a purchases file wait here between the import's transactions, each written a
# chunk of members at a time. A table rather than a temporary one, because a connection pooler in
# transaction mode may hand each transaction another session; unlogged, because it is scratch
# space: PostgreSQL empties it after a crash, and an interrupted import is simply run again.
CREATE = """
CREATE UNLOGGED TABLE rewards_import_staging (
    run uuid NOT NULL,
    chunk integer NOT NULL,
    line bigint NOT NULL,
    first_of_key boolean NOT NULL,
    store_id bigint NOT NULL,
    receipt_number text NOT NULL,
    member_id bigint,
    member_number text,
    gross numeric NOT NULL,
    category text NOT NULL,
    quantity integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run, chunk, line)
)
"""


class Migration(migrations.Migration):
    dependencies = [("rewards", "0012_history_import")]

    operations = [migrations.RunSQL(CREATE, "DROP TABLE rewards_import_staging")]
