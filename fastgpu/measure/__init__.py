"""What a run measures: step clocks, the meter, resource monitor, FLOPs, profiles, quality metrics, memory."""
