"""The aggregator: judges probe results from every region with the N-of-M regions rule."""
