"""The ``engine`` scenario: the real engine direct vs through the gateway."""
