"""shortlink: SMS link tracking, redirects and click forwarding."""

__version__ = "0.1.0"
