"""The cohort QC report: table (parquet + CSV), overlay snapshots, flagged cases, provenance, HTML."""
