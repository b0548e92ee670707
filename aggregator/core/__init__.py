"""The pure core: rules, alerts, ingest, history and the pipeline that joins them; no I/O."""
