// Keeps the test-support library non-empty while no helpers exist yet.
