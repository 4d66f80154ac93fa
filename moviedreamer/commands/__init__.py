"""The command-line commands, one module each with `HELP`, `add_arguments(parser)` and `run(args) -> int`.

The top floor: a command wires the stages together and may import any of them. Each imports its stage code inside
`run`, so building the parser for `moviedreamer --help` or `validate` never loads torch or a model library.
"""
