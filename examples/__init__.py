"""Small applications that use dbfleet's client library (not part of the package)."""
