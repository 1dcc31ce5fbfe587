"""The `conjure` command's subcommands, a module a job; each module lists its commands
in COMMANDS and cli/main.py adds them to the root group. They parse, call the Python
API and print; the API's modules are imported inside the commands so that
`conjure --help` stays light."""
