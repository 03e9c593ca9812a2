"""pytest plugin: placeholder until the plugin lands (issue 4)."""
