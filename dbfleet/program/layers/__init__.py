"""The four layers of a region group; each builds one stack `<layer>-<group>`."""
