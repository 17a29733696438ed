"""The `tokar` command line."""
