"""The transformers integration: config classes, HfQuantizers, loading, saving hooks, registration."""
