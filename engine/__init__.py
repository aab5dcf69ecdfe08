"""Portico's engine side: prepare a model, launch vLLM, supervise processes.

Nothing here imports the gateway; the two halves share only the HTTP contract
(OpenAI routes plus vLLM's ``/health``).
"""
