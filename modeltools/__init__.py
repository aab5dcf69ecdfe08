"""Model tooling: ``portico model quantize`` and ``portico model compare``.

    quantize        4-bit GPTQ/AWQ checkpoints with llm-compressor (the ``quantize`` extra)
    calibration     the shipped calibration and held-out text sets (``data/``)
    measure         perplexity, speed, memory and answers of a running engine
    compare         serve each model in turn and measure it
    compare_report  the comparison as JSON, Markdown and PNG

Built on the engine package (it prepares models and starts engines to measure them); the
engine never imports this package, so the launcher and its image need none of it.
"""
