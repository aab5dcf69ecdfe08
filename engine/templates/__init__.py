"""Chat templates Portico ships for models whose own template lacks something (read as data)."""
