"""Prefect flows that run the DVC DAG (the orchestration issue adds them)."""
