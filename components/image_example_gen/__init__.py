"""Custom ExampleGen for labelled images (folder-per-class or CSV manifest); see component.py."""
