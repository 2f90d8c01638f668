"""The query each chart of the Hit metrics export asks, for Superset's `/api/v1/chart/data` (`query_context`) and
as plain SQL over the rollup tables (`chart_sql`): the tests compare the two, and check the SQL on both databases.

Only what the export's charts use is covered: saved metrics by name, group-bys or an x axis, simple `==` filters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXPORT = Path(__file__).resolve().parent / "dashboard"


def load_export(root: Path = EXPORT) -> dict[str, dict[str, dict[str, Any]]]:
    """The export's YAML documents by kind (`charts`, `datasets`, ...) and uuid."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(root.rglob("*.yaml")):
        if path.name != "metadata.yaml":
            document = yaml.safe_load(path.read_text())
            found.setdefault(path.relative_to(root).parts[0], {})[document["uuid"]] = document
    return found


def _queries(params: dict[str, Any]) -> list[dict[str, Any]]:
    def one(metrics: list[str], filters: list[dict[str, Any]], limit: int) -> dict[str, Any]:
        columns = [params["x_axis"]] if "x_axis" in params else list(params["groupby"])
        order = [[columns[0], True]] if "x_axis" in params else [[metrics[0], False]]
        simple = [{"col": f["subject"], "op": f["operator"], "val": f["comparator"]} for f in filters]
        return {"columns": columns, "metrics": metrics, "filters": simple, "orderby": order, "row_limit": limit}

    first = one(params.get("metrics") or [params["metric"]], params["adhoc_filters"], params["row_limit"])
    if params["viz_type"] != "mixed_timeseries":
        return [first]
    return [first, one(params["metrics_b"], params["adhoc_filters_b"], params["row_limit_b"])]


def query_context(chart: dict[str, Any], datasource_id: int) -> dict[str, Any]:
    """The body of `POST /api/v1/chart/data` for `chart` (an export document) on the imported dataset."""
    return {
        "datasource": {"id": datasource_id, "type": "table"},
        "queries": _queries(chart["params"]),
        "result_format": "json",
        "result_type": "full",
        "form_data": chart["params"],
    }


def chart_sql(chart: dict[str, Any], dataset: dict[str, Any]) -> list[str]:
    """The SQL of each of the chart's queries over the dataset, as Superset builds it (ordered, limited)."""
    metrics = {metric["metric_name"]: metric["expression"] for metric in dataset["metrics"]}
    source = f"({dataset['sql']}) AS dataset" if dataset["sql"] else dataset["table_name"]
    statements = []
    for query in _queries(chart["params"]):
        columns = ", ".join(query["columns"])
        selected = ", ".join([columns] + [f"{metrics[name]} AS {name}" for name in query["metrics"]])
        where = " AND ".join(f"{f['col']} = {f['val']!r}" for f in query["filters"]) or "1 = 1"
        key, ascending = query["orderby"][0]
        order = key if key in query["columns"] else metrics[key]
        statements.append(
            f"SELECT {selected} FROM {source} WHERE {where} GROUP BY {columns} "
            f"ORDER BY {order} {'ASC' if ascending else 'DESC'}, {columns} LIMIT {query['row_limit']}"
        )
    return statements
