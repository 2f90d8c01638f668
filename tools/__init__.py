"""Development services for hitmetrics: a local Elasticsearch node and a throwaway PostgreSQL."""
