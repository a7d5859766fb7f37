"""One module per kernel interface. Parsers are pure functions of text; readers
take a ``KernelRoots`` and build every path from it."""
