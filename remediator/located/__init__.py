"""Located input: YAML documents whose every key keeps its line and column, and the
``file:line:col: key: message`` issues that policies and settings report with them."""
