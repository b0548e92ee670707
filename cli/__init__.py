"""`vigil`: the operator's command line."""
