"""One module per subcommand of the ``remediator`` command line."""
