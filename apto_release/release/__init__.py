"""What a release is (the manifest, ``release.toml``) and how its stages run (the pipeline and its state file)."""
