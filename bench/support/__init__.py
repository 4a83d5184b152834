"""Start-up, data and measurement code the benchmark scripts share (not a benchmark itself)."""
