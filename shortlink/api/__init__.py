"""The shortlink HTTP API (`shortlink api`): accounts' links, messages, statistics, forwarding."""
