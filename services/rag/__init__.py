"""RagService: clinical knowledge ingest, context-aware retrieval and grounded answers."""
