"""The hub's configuration: typed values (model) and where they come from (loader)."""
