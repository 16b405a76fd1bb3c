"""The run plumbing below both trainers (docs/architecture.md says what each module holds); import the submodules."""
