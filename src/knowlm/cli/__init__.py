"""The `knowlm` command line: thin modules that parse flags, call the library and print."""
