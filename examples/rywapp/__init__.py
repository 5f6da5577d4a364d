"""rywapp: notes their author reads back at once, in any region (dbfleet.client + dbfleet.web)."""
