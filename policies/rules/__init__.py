"""dbfleet's policies, one module per topic; each module lists its policies in `POLICIES`."""
