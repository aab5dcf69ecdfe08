"""The ``routing`` scenario: round-robin vs prefix affinity over two real engines."""
