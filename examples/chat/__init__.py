"""A terminal chat on Roost: users on different nodes of a cluster talk to each other and
see their friends come and go (MISSION §7's demo). Run ``python -m examples.chat --help``;
examples/README.md walks through it."""
