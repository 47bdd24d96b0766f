"""Cutting a release: the manifest (``release.toml``), cards and the push to the Hub."""
