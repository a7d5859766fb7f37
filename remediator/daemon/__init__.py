"""The daemon: the service loop, the executor (the only writer), the state store,
the journal writer and sd_notify."""
