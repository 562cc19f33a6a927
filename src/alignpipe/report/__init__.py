"""Report: FollowBench Table 2 style tables (markdown, CSV) and plots from the evaluate stage's metrics."""
