"""What every scenario shares: processes, client plumbing, statistics, reports, plots."""
