"""`telecare evaluate`: the alert quality of the whole rule set on a simulated population."""
