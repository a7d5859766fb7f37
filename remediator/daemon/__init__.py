"""The daemon: watching, discovery, the main loop and its edges (journal, sd_notify, state)."""
