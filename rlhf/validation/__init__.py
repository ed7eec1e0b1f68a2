"""User dataset files: reading and pandera validation (the `validate` stage is rlhf/stages/validate.py).

- `rlhf.validation.readers`: JSON Lines (.jsonl, .jsonl.gz), JSON arrays, CSV and Parquet into DataFrames
  indexed by the row number shown to the user; `DataFileError` for files that cannot be read.
- `rlhf.validation.hh`: preference pairs from Anthropic's HH-RLHF dialogues.
- `rlhf.validation.schemas`: the pandera schemas of the `sft`, `preference` and `prompts` kinds.
- `rlhf.validation.report`: `Problem` and `ValidationReport`.
- `rlhf.validation.validate`: `validate_file`, `read_dataset`, `check_overlap`.

Nothing is imported here, so importing one module does not pull in the others' dependencies.
"""
