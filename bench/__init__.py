"""Portico's benchmarks: ``python -m bench`` runs the scenarios (see bench/README.md)."""
