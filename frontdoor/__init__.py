"""The front doors, on top of every layer: the `erpcloud` command (:mod:`frontdoor.cli`), which
registers the capabilities' sub-commands and the local site. The fabfile is the other one."""
