"""The `telecare` command: wires the packages together, with embedded defaults for the demo."""
