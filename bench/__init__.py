"""hitmetrics' benchmark: the loader against the node's raw ingest ceiling and a naive baseline, rollups, the DAG.

    python -m bench [--hits 1000000] [--heap 4g] [--output bench/results.json]
    python -m bench --smoke --es-url http://127.0.0.1:9200 --output /tmp/results.json

The README's "Benchmark" section has the latest figures and how to read them.
"""
