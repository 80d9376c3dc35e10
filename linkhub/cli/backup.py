"""`linkhub backup` and `linkhub restore`."""

from __future__ import annotations

import argparse

from hub.config.model import default_database_url
from linkhub.cli.common import data_dir_of


def backup_command(args: argparse.Namespace) -> int:
    """A thin shell: hub/store/backup.py does the work (and is tested without the CLI)."""
    from hub.store.backup import create_backup

    data_dir = data_dir_of(args)
    report = create_backup(data_dir, args.file, args.database_url or default_database_url(data_dir))
    database = report.manifest["database"]
    held = [entry["path"] for entry in report.manifest["files"]]
    if database.get("member"):
        held.insert(0, f"the database (schema {database.get('schema_revision') or 'from before migrations'})")
    print(f"backup written to {report.path}: {', '.join(held) or 'nothing'}")
    for note in report.notes:
        print(note)
    return 0


def restore_command(args: argparse.Namespace) -> int:
    from hub.store.backup import restore_backup

    data_dir = data_dir_of(args)
    report = restore_backup(
        args.file, data_dir, args.database_url or default_database_url(data_dir), force=args.force
    )
    print(f"restored the backup made {report.manifest['created_at']} into {report.data_dir}:")
    if report.database_path is not None:
        print(f"  database: {report.database_path} (upgraded when the hub starts, if it is older)")
    for path in report.files:
        print(f"  {path}")
    for note in report.notes:
        print(note)
    print(f"Start the hub with: linkhub run --data-dir {report.data_dir}")
    return 0
