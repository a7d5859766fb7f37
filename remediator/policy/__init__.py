"""The policy language: YAML (loader) -> pydantic models (models) -> runtime objects (compiled)."""
