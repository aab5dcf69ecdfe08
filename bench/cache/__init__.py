"""The ``cache`` scenario: response-cache hit vs miss on the real engine; hit_latency."""
