"""berqenas: the command-line front door to the berqenas.platform Ansible collection."""

__version__ = "0.1.0"
