"""What the hub keeps on disk: the database (tables, engine, migrations), backups,
and its small secret files."""
