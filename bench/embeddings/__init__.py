"""The ``embeddings`` scenario (issue #16): embedding throughput direct vs through Portico."""
