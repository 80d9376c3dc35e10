"""The database: the tables, the engine and its migrations, and backups."""
