"""The user's own datasets for the `data` stage (`data.source: files`); see docs/data.md.

- `rlhf.userdata.read`: read files and folders with the Hugging Face `datasets` library (local
  files only, cached in the project's `.state` folder), detect their layout and convert them to the
  pipeline's rows (`rlhf.validation.formats`), checked with the validation schemas; every problem
  is a `UserDataError` that names the file, the row and the field.
- `rlhf.userdata.split`: the held-out split by distinct prompt and the six datasets.

Nothing is imported here, so importing one module does not pull in the others' dependencies.
"""
