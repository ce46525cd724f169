"""The run layer: a run folder's life (`folder`), the table of what each config key means to a resume, an evaluation
and the model card (`keys`), and a sweep's bookkeeping (`sweep`)."""
