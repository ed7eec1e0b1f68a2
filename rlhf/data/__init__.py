"""User dataset files: reading, pandera validation and the `validate` stage.

- `rlhf.data.readers`: JSON Lines (.jsonl, .jsonl.gz), JSON arrays, CSV and Parquet into DataFrames
  indexed by the row number shown to the user; `DataFileError` for files that cannot be read.
- `rlhf.data.hh`: preference pairs from Anthropic's HH-RLHF dialogues.
- `rlhf.data.schemas`: the pandera schemas of the `sft`, `preference` and `prompts` kinds.
- `rlhf.data.report`: `Problem` and `ValidationReport`.
- `rlhf.data.validate`: `validate_file`, `read_dataset`, `check_overlap`, `run_validate`.

Nothing is imported here, so importing one module does not pull in the others' dependencies.
"""
