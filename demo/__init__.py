"""A stand-in for the monitored service, to try Vigil and to test it against real HTTP."""
