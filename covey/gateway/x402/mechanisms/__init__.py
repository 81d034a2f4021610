"""Payment mechanisms: one folder per chain family and scheme, each with client, server and facilitator."""
