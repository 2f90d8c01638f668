"""Import the Hit metrics export into Superset, replacing what an older import made (run by tools/bi.py with
Superset's own Python: `.bi/venv/bin/python bi/import_dashboard.py BUNDLE.zip`).

`superset import-dashboards` overwrites the dashboard but keeps the database, datasets and charts it imported
before: a changed rollups URL or chart would be ignored. So each kind is imported on its own with overwrite, in
dependency order, then the dashboard.
"""

import sys
import zipfile

import yaml
from flask import g
from superset.app import create_app

TYPES = (("databases/", "Database"), ("datasets/", "SqlaTable"), ("charts/", "Slice"), ("dashboards/", "Dashboard"))


def main(bundle_path: str, username: str = "admin") -> None:
    app = create_app()
    with app.app_context():
        from superset import security_manager
        from superset.commands.chart.importers.v1 import ImportChartsCommand
        from superset.commands.dashboard.importers.v1 import ImportDashboardsCommand
        from superset.commands.database.importers.v1 import ImportDatabasesCommand
        from superset.commands.dataset.importers.v1 import ImportDatasetsCommand
        from superset.commands.importers.v1.utils import get_contents_from_bundle

        g.user = security_manager.find_user(username=username)
        with zipfile.ZipFile(bundle_path) as bundle:
            contents = get_contents_from_bundle(bundle)
        commands = dict(
            zip(
                (kind for _, kind in TYPES),
                (ImportDatabasesCommand, ImportDatasetsCommand, ImportChartsCommand, ImportDashboardsCommand),
                strict=True,
            )
        )
        for index, (prefix, kind) in enumerate(TYPES):
            # Each command takes its own kind and what it depends on, under a metadata.yaml of its type.
            wanted = tuple(p for p, _ in TYPES[: index + 1])
            part = {name: text for name, text in contents.items() if name.startswith(wanted)}
            metadata = yaml.safe_load(contents["metadata.yaml"]) | {"type": kind}
            part["metadata.yaml"] = yaml.safe_dump(metadata)
            commands[kind](part, overwrite=True).run()
            print(f"imported {sum(name.startswith(prefix) for name in part)} {prefix.rstrip('/')}")


if __name__ == "__main__":
    main(*sys.argv[1:])
