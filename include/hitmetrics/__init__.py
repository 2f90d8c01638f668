"""hitmetrics: page-hit logs into Elasticsearch, 30-minute metrics and rollup tables for BI.

The modules are the pipeline's stages, plain functions importable without Airflow:
config (settings from the environment), model (the hit document and its validation), ingest (reading landing
files), indexes (daily environment indexes), load (bulk loading), aggregate (30-minute aggregations in
Elasticsearch), rollup (the BI tables) and query (exploring hits).
"""

__version__ = "0.1.0"
