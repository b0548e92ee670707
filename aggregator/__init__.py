"""The aggregator: applies the N-of-M regions rule to probe results (its own issue)."""
