"""tokar-example-plugin: one of each kind of tokar component, small and readable. See plugin.py."""
